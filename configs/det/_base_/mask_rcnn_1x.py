# Mask R-CNN 1x with mmdet's single-scale 1333x800 training and the Swin optimizer (BiFormer, SHViT releases);
# the Swin-style releases train multi-scale (mask_rcnn_ms_1x), the PVT-style ones use mask_rcnn_pvt_1x.
_base_ = ['./models/mask_rcnn_fpn.py', './datasets/coco_instance.py', './schedules/adamw_1x.py',
          './default_runtime.py']
