# InLine-PVT-T RetinaNet 1x: not reported; the Agent-PVT RetinaNet recipe (lr 1e-4, wd 1e-4, dp 0.1).
_base_ = ['../_base_/retinanet_pvt_1x.py']
model = dict(backbone=dict(model_name='zoo_inline_pvt_tiny', out_norm=None, drop_path_rate=0.1),
             neck=dict(in_channels=[128, 320, 512]))
