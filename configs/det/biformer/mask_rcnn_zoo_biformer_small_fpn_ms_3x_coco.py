# BiFormer-S Mask R-CNN 3x: not reported; Swin recipe: AdamW 1e-4, wd 0.05, ms crop, the 1x backbone settings.
_base_ = ['../_base_/mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_biformer_small', drop_path_rate=0.2, model_kwargs=dict(n_win=16)),
             neck=dict(in_channels=[64, 128, 256, 512]))
