# DaViT-T Mask R-CNN 3x: 47.4/42.9 box/mask AP; dingmyu/davit mmdet/configs/davit_maskrcnn_3x_coco.py (lr 1e-4, wd 0.05, dp 0.2).
_base_ = ['../_base_/mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_davit_tiny', drop_path_rate=0.2),
             neck=dict(in_channels=[96, 192, 384, 768]))
