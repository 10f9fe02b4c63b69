# LITv2-B Mask R-CNN 1x: 47.3/42.6 box/mask AP; ziplab/LITv2 mask_rcnn_litv2_b_fpn_1x_coco.py
# (single scale, lr 2e-4, wd 1e-4, dp 0.3).
_base_ = ['../_base_/mask_rcnn_pvt_1x.py']
model = dict(backbone=dict(model_name='zoo_litv2_base', drop_path_rate=0.3),
             neck=dict(in_channels=[128, 256, 512, 1024]))
