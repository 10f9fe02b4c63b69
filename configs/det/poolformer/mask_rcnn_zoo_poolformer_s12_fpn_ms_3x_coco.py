# PoolFormer-S12 Mask R-CNN 3x: not reported; Swin recipe: AdamW 1e-4, wd 0.05, ms crop, dp 0 as the 1x.
_base_ = ['../_base_/mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_poolformer_s12', out_norm='GN', drop_path_rate=0.0),
             neck=dict(in_channels=[64, 128, 320, 512]))
