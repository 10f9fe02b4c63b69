# BiFormer-S Mask R-CNN 1x: 47.8/43.2 box/mask AP; rayleizhu/BiFormer maskrcnn.1x.biformer_small.py (single scale, lr 1e-4, wd 0.05, dp 0.2, n_win 16).
_base_ = ['../_base_/mask_rcnn_1x.py']
model = dict(backbone=dict(model_name='zoo_biformer_small', drop_path_rate=0.2, model_kwargs=dict(n_win=16)),
             neck=dict(in_channels=[64, 128, 256, 512]))
