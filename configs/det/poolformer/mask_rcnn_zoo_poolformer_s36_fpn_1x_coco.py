# PoolFormer-S36 Mask R-CNN 1x: 41.0/37.7 box/mask AP; sail-sg/poolformer detection/configs/ mask_rcnn_poolformer_s36_fpn_1x_coco.py (single scale, lr 2e-4, wd 1e-4, dp 0).
_base_ = ['../_base_/mask_rcnn_pvt_1x.py']
model = dict(backbone=dict(model_name='zoo_poolformer_s36', out_norm='GN', drop_path_rate=0.0),
             neck=dict(in_channels=[64, 128, 320, 512]))
