# InLine-PVT-T Mask R-CNN 3x: not reported; Swin recipe: AdamW 1e-4, wd 0.05, ms crop, dp 0.1.
_base_ = ['../_base_/mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_inline_pvt_tiny', out_norm=None, drop_path_rate=0.1),
             neck=dict(in_channels=[64, 128, 320, 512]))
