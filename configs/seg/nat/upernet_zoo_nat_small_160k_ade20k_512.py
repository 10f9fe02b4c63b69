# NAT-S UPerNet 160k: 48.0 mIoU single scale / 49.5 multi-scale; SHI-Labs/Neighborhood-Attention-Transformer segmentation/configs/nat/upernet_nat_small_512x512_160k_ade20k.py (lr 6e-5, wd 0.01, dp 0.5).
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_nat_small', drop_path_rate=0.5),
             decode_head=dict(in_channels=[96, 192, 384, 768]),
             auxiliary_head=dict(in_channels=384))
