# Agent-Swin-T RetinaNet 1x: not reported; mmdet Swin-T RetinaNet recipe, dp 0.1 as the authors' Mask R-CNN.
_base_ = ['../_base_/retinanet_1x.py']
model = dict(backbone=dict(model_name='zoo_agent_swin_tiny', drop_path_rate=0.1),
             neck=dict(in_channels=[192, 384, 768]))
