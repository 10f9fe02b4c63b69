# BiFormer-S UPerNet 160k: 49.8 mIoU ss / 50.8 ms; rayleizhu/BiFormer upernet.biformer_small.py (the Swin recipe, dp 0.3, n_win 8).
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_biformer_small', drop_path_rate=0.3, model_kwargs=dict(n_win=8)),
             decode_head=dict(in_channels=[64, 128, 256, 512]),
             auxiliary_head=dict(in_channels=256))
