# BiFormer-B UPerNet 160k: 51.0 mIoU ss / 51.7 ms; rayleizhu/BiFormer upernet.biformer_base.py (the Swin recipe,
# dp 0.4, n_win 8).
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_biformer_base', drop_path_rate=0.4,
                           model_kwargs=dict(n_win=8)),
             decode_head=dict(in_channels=[96, 192, 384, 768]),
             auxiliary_head=dict(in_channels=384))
