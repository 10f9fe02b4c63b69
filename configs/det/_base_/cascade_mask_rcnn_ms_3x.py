# Cascade Mask R-CNN 3x (36 epochs, lr x0.1 at 27 and 33), otherwise as cascade_mask_rcnn_ms_1x.
_base_ = ['./models/cascade_mask_rcnn_fpn.py', './datasets/coco_instance_ms_crop.py', './schedules/adamw_3x.py',
          './default_runtime.py']
