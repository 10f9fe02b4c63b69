# NAT-S Mask R-CNN 3x: 48.4/43.2 box/mask AP; SHI-Labs/Neighborhood-Attention-Transformer mask_rcnn_nat_small_3x_coco.py (lr 1e-4, wd 0.05, dp 0.35).
_base_ = ['../_base_/mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_nat_small', drop_path_rate=0.35),
             neck=dict(in_channels=[96, 192, 384, 768]))
