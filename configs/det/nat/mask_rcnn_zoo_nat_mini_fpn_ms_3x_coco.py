# NAT-Mini Mask R-CNN 3x: 46.5/41.7 box/mask AP; SHI-Labs/Neighborhood-Attention-Transformer mask_rcnn_nat_mini_3x_coco.py (lr 1e-4, wd 0.05, dp 0.2).
_base_ = ['../_base_/mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_nat_mini', drop_path_rate=0.2),
             neck=dict(in_channels=[64, 128, 256, 512]))
