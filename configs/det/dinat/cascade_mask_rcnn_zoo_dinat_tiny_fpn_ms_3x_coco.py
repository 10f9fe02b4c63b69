# DiNAT-T Cascade Mask R-CNN 3x: 52.2/45.1 box/mask AP; SHI-Labs/Neighborhood-Attention-Transformer detection/configs/dinat/cascade_mask_rcnn_dinat_tiny_3x_coco.py (lr 0.0001, wd 0.05, dp 0.3).
# the authors' dense-prediction dilations (larger than the ImageNet 224 schedule: inputs are larger)
_base_ = ['../_base_/cascade_mask_rcnn_ms_3x.py']
_dilations = ((1, 28, 1), (1, 7, 1, 14), (1, 3, 1, 5, 1, 7) * 3, (1, 3, 1, 3, 1))
model = dict(backbone=dict(model_name='zoo_dinat_tiny', drop_path_rate=0.3,
                           model_kwargs=dict(dilations=_dilations)),
             neck=dict(in_channels=[64, 128, 256, 512]))
