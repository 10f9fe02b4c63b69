# CSWin-S Semantic FPN 80k: 49.2 mIoU (microsoft/CSWin-Transformer README; the release has no Semantic FPN config:
# the _base_ Semantic FPN recipe run for 80k iterations, drop_path 0.4 as in ImageNet training).
_base_ = ['../_base_/sem_fpn_40k.py']
model = dict(backbone=dict(model_name='zoo_cswin_small', drop_path_rate=0.4),
             neck=dict(in_channels=[64, 128, 256, 512]))
train_cfg = dict(max_iters=80000, val_interval=8000)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=80000, by_epoch=False)]
