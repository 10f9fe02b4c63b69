# Agent-Swin-S UPerNet 160k: 48.08 mIoU; LeapLabTHU/Agent-Attention upernet_agent_swin_s_9-12-14-7.py
# (lr 6e-5, wd 0.01, dp 0.3).
# the authors' downstream agent grids 9-12-14-7 (agent_shapes; the ImageNet weights load unchanged, biases resampled)
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_agent_swin_small', drop_path_rate=0.3,
                           model_kwargs=dict(agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7)))),
             decode_head=dict(in_channels=[96, 192, 384, 768]),
             auxiliary_head=dict(in_channels=384))
