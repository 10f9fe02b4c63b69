# Agent-PVT-T Mask R-CNN 3x: not reported; Swin recipe: AdamW 1e-4, wd 0.05, ms crop, dp 0.1 as the 1x.
# the authors' downstream agent grids 12-16-28-28 (agent_shapes; the ImageNet weights load unchanged, biases resampled)
_base_ = ['../_base_/mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_agent_pvt_tiny', out_norm=None, drop_path_rate=0.1,
                           model_kwargs=dict(agent_shapes=((12, 12), (16, 16), (28, 28), (28, 28)))),
             neck=dict(in_channels=[64, 128, 320, 512]))
