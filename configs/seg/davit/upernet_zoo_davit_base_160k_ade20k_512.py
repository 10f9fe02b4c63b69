# DaViT-B UPerNet 160k: 49.4 mIoU (dingmyu/davit README); its upernet_davit_512x512_160k_ade20k.py
# (one file for every size: the Swin recipe, lr 6e-5, wd 0.01, dp 0.3).
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_davit_base', drop_path_rate=0.3),
             decode_head=dict(in_channels=[128, 256, 512, 1024]),
             auxiliary_head=dict(in_channels=512))
