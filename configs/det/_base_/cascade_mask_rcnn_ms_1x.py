# Cascade Mask R-CNN 1x with the Swin release's multi-scale + crop training and AdamW lr 1e-4, wd 0.05.
_base_ = ['./models/cascade_mask_rcnn_fpn.py', './datasets/coco_instance_ms_crop.py', './schedules/adamw_1x.py',
          './default_runtime.py']
