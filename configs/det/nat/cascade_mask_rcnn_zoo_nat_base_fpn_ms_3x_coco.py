# NAT-B Cascade Mask R-CNN 3x: 52.3/45.1 box/mask AP; SHI-Labs/Neighborhood-Attention-Transformer detection/configs/nat/cascade_mask_rcnn_nat_base_3x_coco.py (lr 1e-4, wd 0.05, dp 0.5, layer scale 1e-5 as the ImageNet model).
_base_ = ['../_base_/cascade_mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_nat_base', drop_path_rate=0.5),
             neck=dict(in_channels=[128, 256, 512, 1024]))
