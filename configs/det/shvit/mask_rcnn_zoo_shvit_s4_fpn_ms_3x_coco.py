# SHViT-S4 Mask R-CNN 3x: not reported; Swin recipe: AdamW 1e-4, wd 0.05, ms crop, the 1x neck.
# SHViT stages are at strides 16/32/64: TransConvFPN adds 2 finer level(s) by transposed convs, as the authors' neck
_base_ = ['../_base_/mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_shvit_s4', out_indices=(0, 1, 2), out_norm=None, drop_path_rate=None),
             neck=dict(type='TransConvFPN', in_channels=[224, 336, 448], num_up=2))
