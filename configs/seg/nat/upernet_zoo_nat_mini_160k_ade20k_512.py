# NAT-Mini UPerNet 160k: 45.1 mIoU single scale / 46.4 multi-scale; SHI-Labs/Neighborhood-Attention-Transformer segmentation/configs/nat/upernet_nat_mini_512x512_160k_ade20k.py (lr 6e-5, wd 0.01, dp 0.2).
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_nat_mini', drop_path_rate=0.2),
             decode_head=dict(in_channels=[64, 128, 256, 512]),
             auxiliary_head=dict(in_channels=256))
