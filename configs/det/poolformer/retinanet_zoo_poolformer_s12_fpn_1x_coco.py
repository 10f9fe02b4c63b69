# PoolFormer-S12 RetinaNet 1x: 36.2 AP; sail-sg/poolformer detection/configs/retinanet_poolformer_s12_fpn_1x_coco.py (lr 1e-4, wd 1e-4, dp 0).
_base_ = ['../_base_/retinanet_pvt_1x.py']
model = dict(backbone=dict(model_name='zoo_poolformer_s12', out_norm='GN', drop_path_rate=0.0),
             neck=dict(in_channels=[128, 320, 512]))
