# NAT-S Cascade Mask R-CNN 3x: 52.0/44.9 box/mask AP; SHI-Labs/Neighborhood-Attention-Transformer detection/configs/nat/cascade_mask_rcnn_nat_small_3x_coco.py (lr 1e-4, wd 0.05, dp 0.3, layer scale 1e-5 as the ImageNet model).
_base_ = ['../_base_/cascade_mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_nat_small', drop_path_rate=0.3),
             neck=dict(in_channels=[96, 192, 384, 768]))
