# PoolFormer-S12 Mask R-CNN 1x 37.3/34.6 (the authors report Semantic FPN, not UPerNet, for ADE20K).
# Recipe: the shared Swin-style _base_ (AdamW, drop path as the base); the authors' per-family settings
# (drop path, lr, extra model options) are not checked here.
_base_ = ['../_base_/mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_poolformer_s12', out_norm='GN', drop_path_rate=0.2),
             neck=dict(in_channels=[64, 128, 320, 512]))
