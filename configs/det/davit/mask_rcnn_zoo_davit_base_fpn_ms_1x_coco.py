# DaViT-B Mask R-CNN 1x: 48.2/43.3 box/mask AP (dingmyu/davit README); its davit_maskrcnn_1x_coco.py
# (one file for every size: lr 1e-4, wd 0.05, ms crop, dp 0.1).
_base_ = ['../_base_/mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_davit_base', drop_path_rate=0.1),
             neck=dict(in_channels=[128, 256, 512, 1024]))
