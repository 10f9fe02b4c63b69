# Swin-B UPerNet 160k: 48.13 mIoU single scale / 49.72 multi-scale (Swin segmentation release, dp 0.3).
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_swin_base', drop_path_rate=0.3),
             decode_head=dict(in_channels=[128, 256, 512, 1024]),
             auxiliary_head=dict(in_channels=512))
