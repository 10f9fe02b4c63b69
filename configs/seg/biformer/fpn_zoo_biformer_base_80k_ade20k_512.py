# BiFormer-B Semantic FPN 80k: 49.9 mIoU; rayleizhu/BiFormer sfpn.biformer_base.py (lr 2e-4, wd 1e-4, cosine,
# batch 32, dp 0.3, n_win 8).
_base_ = ['../_base_/sem_fpn_40k.py']
model = dict(backbone=dict(model_name='zoo_biformer_base', drop_path_rate=0.3,
                           model_kwargs=dict(n_win=8)),
             neck=dict(in_channels=[96, 192, 384, 768]))
train_dataloader = dict(batch_size=4)  # 8 GPUs x 4
train_cfg = dict(max_iters=80000, val_interval=8000)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=1000),
                   dict(type='CosineAnnealingLR', eta_min=0.0, begin=1000, end=80000, by_epoch=False)]
