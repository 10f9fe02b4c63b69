# Swin-S Cascade Mask R-CNN 3x: 51.9/45.0 box/mask AP; SwinTransformer/Swin-Transformer-Object-Detection cascade_mask_rcnn_swin_small_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco.py (lr 1e-4, wd 0.05, dp 0.2).
_base_ = ['../_base_/cascade_mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_swin_small', drop_path_rate=0.2),
             neck=dict(in_channels=[96, 192, 384, 768]))
