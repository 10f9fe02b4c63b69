# SHViT-S4 Mask R-CNN 1x: 39.0/35.9 box/mask AP; ysj9909/SHViT downstream/configs/mask_rcnn_shvit_s4_fpn_1x_coco.py (single scale, lr 1e-4, wd 0.05).
# SHViT stages are at strides 16/32/64: TransConvFPN adds 2 finer level(s) by transposed convs, as the authors' neck
_base_ = ['../_base_/mask_rcnn_1x.py']
model = dict(backbone=dict(model_name='zoo_shvit_s4', out_indices=(0, 1, 2), out_norm=None, drop_path_rate=None),
             neck=dict(type='TransConvFPN', in_channels=[224, 336, 448], num_up=2))
