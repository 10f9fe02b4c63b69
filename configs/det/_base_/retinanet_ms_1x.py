# RetinaNet 1x with the Swin-release multi-scale + crop training (DaViT, L2ViT).
_base_ = ['./models/retinanet_fpn.py', './datasets/coco_detection_ms_crop.py', './schedules/adamw_1x.py',
          './default_runtime.py']
