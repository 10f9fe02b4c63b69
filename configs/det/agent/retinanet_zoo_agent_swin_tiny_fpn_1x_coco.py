# Agent-Swin-T RetinaNet 1x: not reported; mmdet Swin-T RetinaNet recipe, dp 0.1 as the authors' Mask R-CNN.
# the authors' downstream agent grids 9-12-14-7 (agent_shapes; the ImageNet weights load unchanged, biases resampled)
_base_ = ['../_base_/retinanet_1x.py']
model = dict(backbone=dict(model_name='zoo_agent_swin_tiny', drop_path_rate=0.1,
                           model_kwargs=dict(agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7)))),
             neck=dict(in_channels=[192, 384, 768]))
