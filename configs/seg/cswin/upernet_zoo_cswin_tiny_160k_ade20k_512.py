# CSWin-T UPerNet 160k: 49.3 mIoU single scale / 50.7 multi-scale (CSWin segmentation release: AdamW 6e-5, wd 0.01, dp 0.3).
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_cswin_tiny', drop_path_rate=0.3),
             decode_head=dict(in_channels=[64, 128, 256, 512]),
             auxiliary_head=dict(in_channels=256))
