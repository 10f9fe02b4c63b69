# 40k iterations, AdamW lr 2e-4 (batch 16), weight decay 1e-4, poly (power 0.9) to 0, no warmup: the Semantic
# FPN recipe of PVT as used by PoolFormer and Agent-PVT (weight decay on every parameter, as theirs).
_base_ = ['./adamw_160k.py']
max_iters = 40000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=4000)
optim_wrapper = dict(optimizer=dict(lr=0.0002, weight_decay=0.0001), paramwise_cfg=dict(zoo_no_decay=False))
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=max_iters, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval=4000))
