# DaViT-T Mask R-CNN 1x: 45.0/41.1 box/mask AP; dingmyu/davit mmdet/configs/davit_maskrcnn_1x_coco.py (lr 1e-4, wd 0.05, dp 0.1).
_base_ = ['../_base_/mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_davit_tiny', drop_path_rate=0.1),
             neck=dict(in_channels=[96, 192, 384, 768]))
