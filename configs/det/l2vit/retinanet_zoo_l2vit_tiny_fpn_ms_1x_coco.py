# L2ViT-T RetinaNet 1x: no number published; ChuanyangZheng/L2ViT retinanet_1x_l2vit_v0_tiny_coco.py (ms crop, lr 1e-4, wd 0.05, dp 0.1).
_base_ = ['../_base_/retinanet_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_l2vit_tiny', drop_path_rate=0.1),
             neck=dict(in_channels=[192, 384, 768]))
