# LITv2-S Mask R-CNN 1x: 44.9/40.8 box/mask AP; ziplab/LITv2 mask_rcnn_litv2_s_fpn_1x_coco.py (single scale, lr 2e-4, wd 1e-4, dp 0.2).
_base_ = ['../_base_/mask_rcnn_pvt_1x.py']
model = dict(backbone=dict(model_name='zoo_litv2_small', drop_path_rate=0.2),
             neck=dict(in_channels=[96, 192, 384, 768]))
optim_wrapper = dict(paramwise_cfg=dict(zoo_no_decay=True))  # the authors exclude norms from weight decay
