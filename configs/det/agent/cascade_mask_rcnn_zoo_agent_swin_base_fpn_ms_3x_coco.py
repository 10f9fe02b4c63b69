# Agent-Swin-B Cascade Mask R-CNN 3x: 52.6/45.3 box/mask AP; LeapLabTHU/Agent-Attention agent_swin_b_crcnn_3x_9-12-14-7.py (lr 1e-4, wd 0.05, dp 0.4).
# the authors' downstream agent grids 9-12-14-7 (agent_shapes; the ImageNet weights load unchanged, biases resampled)
_base_ = ['../_base_/cascade_mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_agent_swin_base', drop_path_rate=0.4,
                           model_kwargs=dict(agent_shapes=((9, 9), (12, 12), (14, 14), (7, 7)))),
             neck=dict(in_channels=[128, 256, 512, 1024]))
