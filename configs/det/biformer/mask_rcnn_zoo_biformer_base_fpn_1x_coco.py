# BiFormer-B Mask R-CNN 1x: 48.6/43.7 box/mask AP; rayleizhu/BiFormer maskrcnn.1x.biformer_base.py (single scale,
# lr 1e-4, wd 0.05, dp 0.3, n_win 16).
_base_ = ['../_base_/mask_rcnn_1x.py']
model = dict(backbone=dict(model_name='zoo_biformer_base', drop_path_rate=0.3,
                           model_kwargs=dict(n_win=16)),
             neck=dict(in_channels=[96, 192, 384, 768]))
