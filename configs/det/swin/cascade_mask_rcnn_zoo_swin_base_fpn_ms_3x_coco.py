# Swin-B Cascade Mask R-CNN 3x: 51.9/45.0 box/mask AP; SwinTransformer/Swin-Transformer-Object-Detection cascade_mask_rcnn_swin_base_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco.py (lr 1e-4, wd 0.05, dp 0.3).
_base_ = ['../_base_/cascade_mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_swin_base', drop_path_rate=0.3),
             neck=dict(in_channels=[128, 256, 512, 1024]))
