# DaViT-S Mask R-CNN 1x: 47.7/42.9 box/mask AP (dingmyu/davit README); the T configs' recipe, dp 0.2.
_base_ = ['../_base_/mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_davit_small', drop_path_rate=0.2),
             neck=dict(in_channels=[96, 192, 384, 768]))
