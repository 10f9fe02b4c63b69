# SHViT-S4 UPerNet 160k: not reported (no ADE20K in ysj9909/SHViT); Swin UPerNet recipe (lr 6e-5, wd 0.01, poly, batch 16).
# on its 3 stages (strides 16/32/64); the auxiliary head on the stride-16 one
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_shvit_s4', out_indices=(0, 1, 2), out_norm=None, drop_path_rate=None),
             decode_head=dict(in_channels=[224, 336, 448], in_index=[0, 1, 2]),
             auxiliary_head=dict(in_channels=224, in_index=0))
