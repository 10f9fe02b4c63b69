# CSWin-B UPerNet 160k: 51.1 mIoU single scale / 52.2 multi-scale (CSWin segmentation release: AdamW 6e-5, wd 0.01, dp 0.6).
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_cswin_base', drop_path_rate=0.6),
             decode_head=dict(in_channels=[96, 192, 384, 768]),
             auxiliary_head=dict(in_channels=384))
