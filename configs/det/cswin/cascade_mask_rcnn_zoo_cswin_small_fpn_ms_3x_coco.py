# CSWin-S Cascade Mask R-CNN 3x: 53.7 box / 46.4 mask AP (microsoft/CSWin-Transformer README; the release has no
# detection configs: Swin's cascade 3x recipe (AdamW 1e-4, wd 0.05, ms crop, GIoU 4conv1fc heads), drop_path 0.4 as in
# ImageNet training).
_base_ = ['../_base_/cascade_mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_cswin_small', drop_path_rate=0.4),
             neck=dict(in_channels=[64, 128, 256, 512]))
