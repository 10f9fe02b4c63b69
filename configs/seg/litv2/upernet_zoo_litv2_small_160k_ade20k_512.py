# LITv2-S Mask R-CNN 1x 44.9/40.8 (the authors report Semantic FPN, not UPerNet, for ADE20K).
# Recipe: the shared Swin-style _base_ (AdamW, drop path as the base); the authors' per-family settings
# (drop path, lr, extra model options) are not checked here.
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_litv2_small', drop_path_rate=0.3),
             decode_head=dict(in_channels=[96, 192, 384, 768]),
             auxiliary_head=dict(in_channels=384))
