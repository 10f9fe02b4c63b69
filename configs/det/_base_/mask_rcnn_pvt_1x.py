# Mask R-CNN 1x, single-scale 1333x800, the PVT optimizer (schedules/adamw_1x_pvt).
_base_ = ['./models/mask_rcnn_fpn.py', './datasets/coco_instance.py', './schedules/adamw_1x_pvt.py',
          './default_runtime.py']
