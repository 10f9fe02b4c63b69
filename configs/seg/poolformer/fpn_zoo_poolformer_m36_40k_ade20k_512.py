# PoolFormer-M36 Semantic FPN 40k: 42.4 mIoU; sail-sg/poolformer fpn_poolformer_m36_ade20k_40k.py
# (lr 2e-4, wd 1e-4, batch 32, dp 0).
_base_ = ['../_base_/sem_fpn_40k.py']
model = dict(backbone=dict(model_name='zoo_poolformer_m36', out_norm='GN', drop_path_rate=0.0),
             neck=dict(in_channels=[96, 192, 384, 768]))
train_dataloader = dict(batch_size=4)  # 8 GPUs x 4
