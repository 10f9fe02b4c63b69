# FocalNet-T (LRF) Mask R-CNN 1x 46.1/41.5; UPerNet 46.8 mIoU.
# Recipe: the shared Swin-style _base_ (AdamW, drop path as the base); the authors' per-family settings
# (drop path, lr, extra model options) are not checked here.
# the authors' dense-prediction focal kernels 9-11-13 (focal_windows 9; the ImageNet 3-5-7 kernels load zero-padded)
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_focalnet_tiny_lrf', drop_path_rate=0.3,
                           model_kwargs=dict(focal_windows=(9, 9, 9, 9))),
             decode_head=dict(in_channels=[96, 192, 384, 768]),
             auxiliary_head=dict(in_channels=384))
