# FocalNet-S (LRF) UPerNet 160k: 49.1 mIoU ss / 50.1 ms (microsoft/FocalNet README); the Swin recipe,
# dp 0.3 (the authors' segmentation configs are not in the repo snapshot).
# the authors' dense-prediction focal kernels 9-11-13 (focal_windows 9; the ImageNet 3-5-7 kernels load zero-padded)
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_focalnet_small_lrf', drop_path_rate=0.3,
                           model_kwargs=dict(focal_windows=(9, 9, 9, 9))),
             decode_head=dict(in_channels=[96, 192, 384, 768]),
             auxiliary_head=dict(in_channels=384))
