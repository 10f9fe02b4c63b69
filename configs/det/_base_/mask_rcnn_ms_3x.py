_base_ = ['./models/mask_rcnn_fpn.py', './datasets/coco_instance_ms_crop.py', './schedules/adamw_3x.py',
          './default_runtime.py']
