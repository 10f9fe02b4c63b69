# DiNAT-B Cascade Mask R-CNN 3x: 53.4/46.2 box/mask AP; SHI-Labs/Neighborhood-Attention-Transformer detection/configs/dinat/cascade_mask_rcnn_dinat_base_3x_coco.py (lr 7.5e-05, wd 0.05, dp 0.6).
# the authors' dense-prediction dilations (larger than the ImageNet 224 schedule: inputs are larger)
_base_ = ['../_base_/cascade_mask_rcnn_ms_3x.py']
_dilations = ((1, 28, 1), (1, 7, 1, 14), (1, 3, 1, 5, 1, 7) * 3, (1, 3, 1, 3, 1))
model = dict(backbone=dict(model_name='zoo_dinat_base', drop_path_rate=0.6,
                           model_kwargs=dict(dilations=_dilations)),
             neck=dict(in_channels=[128, 256, 512, 1024]))
optim_wrapper = dict(optimizer=dict(lr=7.5e-05))
