# Cascade Mask R-CNN + FPN with a zoo backbone: mmdet 3.3.0's cascade-mask-rcnn_r50_fpn with the heads of the Swin
# detection release (cascade_mask_rcnn_swin_fpn + its *_giou_4conv1f_* configs), which the NAT/DiNAT, FocalNet,
# MaxViT and Agent-Swin releases reuse: three stages (IoU 0.5 / 0.6 / 0.7) of 4-conv-1-fc box heads with SyncBN,
# class-specific regression of decoded boxes with a GIoU loss (weight 10). The backbone and FPN come from
# mask_rcnn_fpn.py: a variant file sets backbone.model_name, drop_path_rate and neck.in_channels.
_base_ = ['./mask_rcnn_fpn.py']
_head_norm = dict(type='SyncBN', requires_grad=True)


def _box_head(target_stds):
    return dict(
        type='Shared4Conv1FCBBoxHead',
        in_channels=256,
        conv_out_channels=256,
        fc_out_channels=1024,
        roi_feat_size=7,
        num_classes=80,
        norm_cfg=_head_norm,
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.], target_stds=target_stds),
        reg_class_agnostic=False,
        reg_decoded_bbox=True,
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=10.0))


def _stage_train_cfg(iou):
    return dict(
        assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                      match_low_quality=False, ignore_iof_thr=-1),
        sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
        mask_size=28,
        pos_weight=-1,
        debug=False)


model = dict(
    type='CascadeRCNN',
    rpn_head=dict(loss_bbox=dict(type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0)),
    roi_head=dict(  # the RoI extractors and the mask head stay those of mask_rcnn_fpn.py
        type='CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_head=[_box_head([0.1, 0.1, 0.2, 0.2]), _box_head([0.05, 0.05, 0.1, 0.1]),
                   _box_head([0.033, 0.033, 0.067, 0.067])]),
    train_cfg=dict(
        rpn=dict(allowed_border=0),
        rpn_proposal=dict(nms_pre=2000, max_per_img=2000),
        rcnn=[_stage_train_cfg(0.5), _stage_train_cfg(0.6), _stage_train_cfg(0.7)]))
