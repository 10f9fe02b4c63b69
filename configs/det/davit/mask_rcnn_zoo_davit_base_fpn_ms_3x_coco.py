# DaViT-B Mask R-CNN 3x: 49.9/44.6 box/mask AP (dingmyu/davit README); its davit_maskrcnn_3x_coco.py
# (one file for every size: lr 1e-4, wd 0.05, ms crop, dp 0.2).
_base_ = ['../_base_/mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_davit_base', drop_path_rate=0.2),
             neck=dict(in_channels=[128, 256, 512, 1024]))
