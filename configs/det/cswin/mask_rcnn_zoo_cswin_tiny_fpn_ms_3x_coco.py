# CSWin-T Mask R-CNN 3x: 49.0 box / 43.6 mask AP (microsoft/CSWin-Transformer README; the release has no
# detection configs: Swin's 3x recipe (AdamW 1e-4, wd 0.05, ms crop), drop_path 0.2 as in ImageNet training).
_base_ = ['../_base_/mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_cswin_tiny', drop_path_rate=0.2),
             neck=dict(in_channels=[64, 128, 256, 512]))
