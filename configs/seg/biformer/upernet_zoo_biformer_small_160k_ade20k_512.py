# BiFormer-S Mask R-CNN 1x 47.8/43.2; UPerNet 49.8 mIoU.
# Recipe: the shared Swin-style _base_ (AdamW, drop path as the base); the authors' per-family settings
# (drop path, lr, extra model options) are not checked here.
_base_ = ['../_base_/upernet_160k.py']
model = dict(backbone=dict(model_name='zoo_biformer_small', drop_path_rate=0.3),
             decode_head=dict(in_channels=[64, 128, 256, 512]),
             auxiliary_head=dict(in_channels=256))
