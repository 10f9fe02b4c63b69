# LITv2-M Mask R-CNN 1x: 46.8/42.3 box/mask AP; ziplab/LITv2 mask_rcnn_litv2_m_fpn_1x_coco.py
# (single scale, lr 2e-4, wd 1e-4, dp 0.2).
_base_ = ['../_base_/mask_rcnn_pvt_1x.py']
model = dict(backbone=dict(model_name='zoo_litv2_medium', drop_path_rate=0.2),
             neck=dict(in_channels=[96, 192, 384, 768]))
