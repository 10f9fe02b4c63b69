# NAT-T Cascade Mask R-CNN 3x: 51.4/44.5 box/mask AP; SHI-Labs/Neighborhood-Attention-Transformer detection/configs/nat/cascade_mask_rcnn_nat_tiny_3x_coco.py (lr 1e-4, wd 0.05, dp 0.3).
_base_ = ['../_base_/cascade_mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_nat_tiny', drop_path_rate=0.3),
             neck=dict(in_channels=[64, 128, 256, 512]))
