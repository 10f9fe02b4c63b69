# Swin-S UPerNet 160k: 47.64 mIoU single scale / 49.47 multi-scale (Swin segmentation release).
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_swin_small', drop_path_rate=0.3),
             decode_head=dict(in_channels=[96, 192, 384, 768]),
             auxiliary_head=dict(in_channels=384))
