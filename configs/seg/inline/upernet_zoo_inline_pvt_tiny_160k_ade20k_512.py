# InLine-PVT-T UPerNet 160k: not reported (LeapLabTHU/InLine); Swin UPerNet recipe (lr 6e-5, wd 0.01, poly, batch 16), dp 0.1.
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_inline_pvt_tiny', out_norm=None, drop_path_rate=0.1),
             decode_head=dict(in_channels=[64, 128, 320, 512]),
             auxiliary_head=dict(in_channels=320))
