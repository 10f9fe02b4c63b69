# Swin-S RetinaNet 1x, single scale.
_base_ = ['../_base_/retinanet_1x.py']
model = dict(backbone=dict(model_name='zoo_swin_small', drop_path_rate=0.2),
             neck=dict(in_channels=[192, 384, 768]))
