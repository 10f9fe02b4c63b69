# DiNAT-T Mask R-CNN 1x: not reported (3x only); its 3x recipe (lr 1e-4, wd 0.05, dp 0.2) at 12 ep.
_base_ = ['../_base_/mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_dinat_tiny', drop_path_rate=0.2),
             neck=dict(in_channels=[64, 128, 256, 512]))
