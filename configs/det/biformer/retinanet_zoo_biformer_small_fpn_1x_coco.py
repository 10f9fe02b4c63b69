# BiFormer-S RetinaNet 1x: 45.9 AP; rayleizhu/BiFormer retinanet.1x.biformer_small.py (lr 1e-4, wd 1e-4, dp 0.2, n_win 16).
_base_ = ['../_base_/retinanet_pvt_1x.py']
model = dict(backbone=dict(model_name='zoo_biformer_small', drop_path_rate=0.2, model_kwargs=dict(n_win=16)),
             neck=dict(in_channels=[128, 256, 512]))
