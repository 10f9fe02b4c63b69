# Swin-T RetinaNet 1x, single scale (mmdet's Swin-T RetinaNet recipe; the Swin authors publish none).
_base_ = ['../_base_/retinanet_1x.py']
model = dict(backbone=dict(model_name='zoo_swin_tiny', drop_path_rate=0.2),
             neck=dict(in_channels=[192, 384, 768]))
