# EncoderDecoder with a zoo backbone: what UPerNet and Semantic FPN share.
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=(512, 512)),
    backbone=dict(
        type='ZooBackbone',
        model_name=None,
        out_indices=(0, 1, 2, 3),
        pretrained=True,  # the model's ImageNet weights (its default pretrained cfg)
        drop_path_rate=0.3,
        out_norm='LN',  # norm0..norm3 on the outputs, as the authors' dense backbones
        frozen_stages=-1,
        norm_eval=False,
        with_cp=False),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
