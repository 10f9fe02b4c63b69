# The PVT detection recipe (PoolFormer, Agent-PVT, LITv2 Mask R-CNN): as adamw_1x but lr 2e-4 (batch 16),
# weight decay 1e-4 on every parameter (the authors pass no paramwise rules). Their RetinaNets use lr 1e-4.
_base_ = ['./adamw_1x.py']
optim_wrapper = dict(optimizer=dict(lr=0.0002, weight_decay=0.0001), paramwise_cfg=dict(zoo_no_decay=False))
