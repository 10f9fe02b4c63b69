# RetinaNet 1x, single-scale 1333x800, the PVT optimizer at lr 1e-4 (PoolFormer, Agent-PVT, BiFormer, LITv2).
_base_ = ['./models/retinanet_fpn.py', './datasets/coco_detection.py', './schedules/adamw_1x_pvt.py',
          './default_runtime.py']
optim_wrapper = dict(optimizer=dict(lr=0.0001))
