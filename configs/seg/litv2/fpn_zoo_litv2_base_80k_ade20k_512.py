# LITv2-B Semantic FPN 80k: 47.2 mIoU; ziplab/LITv2 litv2_b_fpn_r50_512x512_80k_ade20k.py
# (lr 1e-4, wd 1e-4, dp 0.3).
_base_ = ['../_base_/sem_fpn_40k.py']
model = dict(backbone=dict(model_name='zoo_litv2_base', drop_path_rate=0.3),
             neck=dict(in_channels=[128, 256, 512, 1024]))
train_cfg = dict(max_iters=80000, val_interval=8000)
optim_wrapper = dict(optimizer=dict(lr=0.0001))
param_scheduler = [dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=80000, by_epoch=False)]
