# Agent-Swin-T Mask R-CNN 1x 44.6/40.7; UPerNet 46.68 mIoU.
# Recipe: the shared Swin-style _base_ (AdamW, drop path as the base); the authors' per-family settings
# (drop path, lr, extra model options) are not checked here.
# the authors' downstream agent grids 9-12-14-7 (agent_shapes; the ImageNet weights load unchanged, biases resampled)
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_agent_swin_tiny', drop_path_rate=0.3,
                           model_kwargs=dict(agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7)))),
             decode_head=dict(in_channels=[96, 192, 384, 768]),
             auxiliary_head=dict(in_channels=384))
