# DaViT-T RetinaNet 1x: 44.0 AP; dingmyu/davit mmdet/configs/davit_retinanet_1x_coco.py (ms crop, lr 1e-4, wd 0.05, dp 0.1).
_base_ = ['../_base_/retinanet_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_davit_tiny', drop_path_rate=0.1),
             neck=dict(in_channels=[192, 384, 768]))
