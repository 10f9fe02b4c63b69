# Swin-T Cascade Mask R-CNN 1x: 48.1/41.7 box/mask AP; SwinTransformer/Swin-Transformer-Object-Detection cascade_mask_rcnn_swin_tiny_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_1x_coco.py (lr 1e-4, wd 0.05, dp 0.0).
_base_ = ['../_base_/cascade_mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_swin_tiny', drop_path_rate=0.0),
             neck=dict(in_channels=[96, 192, 384, 768]))
