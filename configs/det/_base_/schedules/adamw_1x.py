# 12 epochs, AdamW lr 1e-4 (batch 16), weight decay 0.05, lr x0.1 at epochs 8 and 11, 500-iteration linear
# warmup: the Swin detection recipe. ZooOptimWrapperConstructor gives every norm and the backbone's
# no_weight_decay() parameters (relative position tables, ...) weight decay 0, for any zoo model.
# The authors train with mixed precision (AmpOptimWrapper; the `cpu` override switches to OptimWrapper).
max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    constructor='ZooOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(zoo_no_decay=True))
auto_scale_lr = dict(enable=False, base_batch_size=16)
