# NAT-T RetinaNet 1x: not reported; mmdet Swin-T RetinaNet recipe, dp 0.2 as the authors' 3x.
_base_ = ['../_base_/retinanet_1x.py']
model = dict(backbone=dict(model_name='zoo_nat_tiny', drop_path_rate=0.2),
             neck=dict(in_channels=[128, 256, 512]))
