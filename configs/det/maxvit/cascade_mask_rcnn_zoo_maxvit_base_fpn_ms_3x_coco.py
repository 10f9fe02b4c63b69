# MaxViT-B Cascade Mask R-CNN: 53.4/45.7 box/mask AP (the paper's table, unverified: google-research/maxvit
# publishes no detection config or number). Schedule, lr and drop path not published: the Swin 3x recipe
# (lr 1e-4, wd 0.05) with the ImageNet drop path 0.4.
_base_ = ['../_base_/cascade_mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_maxvit_base', drop_path_rate=0.4),
             neck=dict(in_channels=[96, 192, 384, 768]))
