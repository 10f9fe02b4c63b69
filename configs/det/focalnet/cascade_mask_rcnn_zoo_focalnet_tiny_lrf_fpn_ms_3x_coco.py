# FocalNet-T (LRF) Cascade Mask R-CNN 3x: 51.5 box AP, mask AP not reported (microsoft/FocalNet README, cascade_mask_rcnn_focalnet_tiny_patch4_mstrain_480-800_adamw_3x_coco_lrf.py; focal kernels 11-9-9-7 per stage).
# That config is not in the repo snapshot: lr 1e-4, wd 0.05 and dp 0.2 as the authors' T Mask R-CNN 3x.
# focal_windows 11-9-9-7: the ImageNet 3-5-7 kernels load zero-padded around the centre
_base_ = ['../_base_/cascade_mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_focalnet_tiny_lrf', drop_path_rate=0.2,
                           model_kwargs=dict(focal_windows=(11, 9, 9, 7))),
             neck=dict(in_channels=[96, 192, 384, 768]))
