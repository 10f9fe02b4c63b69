# LITv2-S RetinaNet 1x: 44.0 AP; ziplab/LITv2 retinanet_litv2_s_fpn_1x_coco.py (lr 1e-4, wd 1e-4, dp 0.2).
_base_ = ['../_base_/retinanet_pvt_1x.py']
model = dict(backbone=dict(model_name='zoo_litv2_small', drop_path_rate=0.2),
             neck=dict(in_channels=[192, 384, 768]))
optim_wrapper = dict(paramwise_cfg=dict(zoo_no_decay=True))  # the authors exclude norms from weight decay
