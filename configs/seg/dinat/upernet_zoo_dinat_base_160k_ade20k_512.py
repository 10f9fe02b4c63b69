# DiNAT-B UPerNet 160k: 49.6 mIoU single scale / 50.4 multi-scale; SHI-Labs/Neighborhood-Attention-Transformer segmentation/configs/dinat/upernet_dinat_base_512x512_160k_ade20k.py (lr 6e-5, wd 0.01, dp 0.5).
# the authors' dense-prediction dilations (larger than the ImageNet 224 schedule: inputs are larger)
_base_ = ['../_base_/upernet_160k.py']
_dilations = ((1, 16, 1), (1, 4, 1, 8), (1, 2, 1, 3, 1, 4) * 3, (1, 2, 1, 2, 1))
model = dict(backbone=dict(model_name='zoo_dinat_base', drop_path_rate=0.5,
                           model_kwargs=dict(dilations=_dilations)),
             decode_head=dict(in_channels=[128, 256, 512, 1024]),
             auxiliary_head=dict(in_channels=512))
