# DiNAT-T UPerNet 160k: 47.8 mIoU single scale / 48.8 multi-scale; SHI-Labs/Neighborhood-Attention-Transformer segmentation/configs/dinat/upernet_dinat_tiny_512x512_160k_ade20k.py (lr 6e-5, wd 0.01, dp 0.3).
# the authors' dense-prediction dilations (larger than the ImageNet 224 schedule: inputs are larger)
_base_ = ['../_base_/upernet_160k.py']
_dilations = ((1, 16, 1), (1, 4, 1, 8), (1, 2, 1, 3, 1, 4) * 3, (1, 2, 1, 2, 1))
model = dict(backbone=dict(model_name='zoo_dinat_tiny', drop_path_rate=0.3,
                           model_kwargs=dict(dilations=_dilations)),
             decode_head=dict(in_channels=[64, 128, 256, 512]),
             auxiliary_head=dict(in_channels=256))
