# Agent-PVT-T Mask R-CNN 1x: 41.4/38.7 box/mask AP; LeapLabTHU/Agent-Attention agent_pvt_t_mrcnn_1x_12-16-28-28.py (single scale, lr 2e-4, wd 1e-4, dp 0.1).
# the authors' downstream agent grids 12-16-28-28 (agent_shapes; the ImageNet weights load unchanged, biases resampled)
_base_ = ['../_base_/mask_rcnn_pvt_1x.py']
model = dict(backbone=dict(model_name='zoo_agent_pvt_tiny', out_norm=None, drop_path_rate=0.1,
                           model_kwargs=dict(agent_shapes=((12, 12), (16, 16), (28, 28), (28, 28)))),
             neck=dict(in_channels=[64, 128, 320, 512]))
