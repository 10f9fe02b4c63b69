# Swin-T UPerNet 160k: 44.51 mIoU single scale / 45.81 multi-scale (Swin segmentation release).
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_swin_tiny', drop_path_rate=0.3),
             decode_head=dict(in_channels=[96, 192, 384, 768]),
             auxiliary_head=dict(in_channels=384))
