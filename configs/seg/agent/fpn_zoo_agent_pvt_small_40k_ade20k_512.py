# Agent-PVT-S Semantic FPN 40k: 44.18 mIoU; LeapLabTHU/Agent-Attention fpn_agent_pvt_s_12-16-28-28.py (lr 2e-4, wd 1e-4, dp 0.1).
# the authors' downstream agent grids 12-16-28-28 (agent_shapes; the ImageNet weights load unchanged, biases resampled)
_base_ = ['../_base_/sem_fpn_40k.py']
model = dict(backbone=dict(model_name='zoo_agent_pvt_small', out_norm=None, drop_path_rate=0.1,
                           model_kwargs=dict(agent_shapes=((12, 12), (16, 16), (28, 28), (28, 28)))),
             neck=dict(in_channels=[64, 128, 320, 512]))
