# CSWin-S UPerNet 160k: 50.4 mIoU single scale / 51.5 multi-scale (CSWin segmentation release: AdamW 6e-5, wd 0.01, dp 0.4).
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_cswin_small', drop_path_rate=0.4),
             decode_head=dict(in_channels=[64, 128, 256, 512]),
             auxiliary_head=dict(in_channels=256))
