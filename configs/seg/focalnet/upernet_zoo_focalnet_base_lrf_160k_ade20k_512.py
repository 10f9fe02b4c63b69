# FocalNet-B (LRF) UPerNet 160k: 50.5 mIoU ss / 51.4 ms (microsoft/FocalNet README); the Swin recipe,
# dp 0.3 (the authors' segmentation configs are not in the repo snapshot).
# the authors' dense-prediction focal kernels 9-11-13 (focal_windows 9; the ImageNet 3-5-7 kernels load zero-padded)
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_focalnet_base_lrf', drop_path_rate=0.3,
                           model_kwargs=dict(focal_windows=(9, 9, 9, 9))),
             decode_head=dict(in_channels=[128, 256, 512, 1024]),
             auxiliary_head=dict(in_channels=512))
