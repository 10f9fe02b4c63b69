"""Config overrides for the zoo's mmdet/mmseg configs, usable on any of them (no OpenMMLab import here).

- `to_cpu(cfg)`: SyncBN -> BN, AmpOptimWrapper -> OptimWrapper, gloo for distributed runs.
- `use_toy_data(cfg, root, ...)`: the toy sets of tools/make_toy_data.py (COCO layout for detection,
  ADE20K layout for segmentation) with small resize-only pipelines, their class lists and head sizes,
  and optionally a short iteration-based schedule.
- `safe_checkpoints(cfg)`: mmengine's CheckpointHook -> zoo's ZooCheckpointHook (crash-safe saves, exact
  resume; zoo.integrations.mm_checkpoint).
- `sync_channels(cfg)`: neck / decode-head input channels from the configured backbone (handy after
  changing the backbone's size through model_kwargs).
All take and return an mmengine Config (or any nested dict) and change it in place.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional, Sequence

__all__ = ['TOY_DET_CLASSES', 'TOY_SEG_CLASSES', 'task_of', 'to_cpu', 'use_toy_data', 'safe_checkpoints',
           'sync_channels', 'set_num_classes', 'backbone_channels']

TOY_DET_CLASSES = ('circle', 'square', 'triangle')
TOY_SEG_CLASSES = ('background', 'circle', 'square', 'triangle')


def task_of(cfg) -> str:
    scope = cfg.get('default_scope')
    if scope not in ('mmdet', 'mmseg'):
        raise ValueError(f"expected a config with default_scope 'mmdet' or 'mmseg', got {scope!r}")
    return 'det' if scope == 'mmdet' else 'seg'


def _walk(node: Any, fn) -> None:
    if isinstance(node, dict):
        fn(node)
        for v in node.values():
            _walk(v, fn)
    elif isinstance(node, (list, tuple)):
        for v in node:
            _walk(v, fn)


def to_cpu(cfg):
    """Make a GPU recipe run on CPU (and in CPU-only distributed runs)."""
    def bn(d):
        if d.get('type') in ('SyncBN', 'MMSyncBN'):
            d['type'] = 'BN'
    _walk(cfg._cfg_dict if hasattr(cfg, '_cfg_dict') else cfg, bn)
    ow = cfg.get('optim_wrapper')
    if ow is not None and ow.get('type') == 'AmpOptimWrapper':
        ow['type'] = 'OptimWrapper'
        ow.pop('loss_scale', None)
    env = cfg.get('env_cfg')
    if env is not None:
        env.setdefault('dist_cfg', {})['backend'] = 'gloo'
        env['cudnn_benchmark'] = False
    return cfg


def safe_checkpoints(cfg):
    """Save through ZooCheckpointHook (same options as mmengine's CheckpointHook)."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if hook is not None and hook.get('type') in ('CheckpointHook', 'mmengine.CheckpointHook'):
        hook['type'] = 'ZooCheckpointHook'
    return cfg


def set_num_classes(cfg, num_classes: int):
    """Every `num_classes` in the model (detector heads, decode and auxiliary heads)."""
    def fix(d):
        if 'num_classes' in d:
            d['num_classes'] = num_classes
    _walk(cfg['model'], fix)
    return cfg


def _loader(cfg, key: str, dataset: dict, shuffle: bool, batch_size: int):
    loader = cfg[key]
    loader['dataset'] = dataset
    loader['batch_size'] = batch_size
    loader['num_workers'] = 0
    loader['persistent_workers'] = False
    loader['sampler'] = dict(type='DefaultSampler', shuffle=shuffle)
    if not shuffle:
        loader.pop('batch_sampler', None)


def use_toy_data(cfg, root: str, img_size: int = 128, batch_size: int = 2, eval_split: str = 'val',
                 iters: Optional[int] = None, log_interval: int = 10):
    """Point `cfg` at the toy set under `root` (see tools/make_toy_data.py).

    root: the folder holding `det/` (COCO: det/annotations/instances_{train,val}.json, det/{train,val}/)
    and `seg/` (ADE20K: seg/images/{training,validation}, seg/annotations/{...}).
    eval_split: 'val' (held-out images) or 'train' (how well the training images were fitted).
    iters: if set, an iteration-based schedule of that length (warmup, evaluation and a checkpoint at the end).
    """
    task = task_of(cfg)
    if task == 'det':
        data_root = os.path.join(root, 'det') + '/'
        with_mask = 'mask_head' in (cfg['model'].get('roi_head') or {})
        ann = dict(type='LoadAnnotations', with_bbox=True, with_mask=with_mask)
        resize = dict(type='Resize', scale=(img_size, img_size), keep_ratio=True)
        train_pipeline = [dict(type='LoadImageFromFile'), ann, resize, dict(type='PackDetInputs')]
        test_pipeline = [dict(type='LoadImageFromFile'), resize, ann, dict(
            type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]

        def dataset(split, pipeline, test_mode):
            return dict(type='CocoDataset', data_root=data_root, ann_file=f'annotations/instances_{split}.json',
                        data_prefix=dict(img=f'{split}/'), metainfo=dict(classes=TOY_DET_CLASSES),
                        filter_cfg=None if test_mode else dict(filter_empty_gt=True, min_size=4),
                        test_mode=test_mode, pipeline=pipeline)

        _loader(cfg, 'train_dataloader', dataset('train', train_pipeline, False), True, batch_size)
        for key in ('val_dataloader', 'test_dataloader'):
            _loader(cfg, key, dataset(eval_split, test_pipeline, True), False, 1)
        metric = dict(type='CocoMetric', ann_file=data_root + f'annotations/instances_{eval_split}.json',
                      metric=['bbox', 'segm'] if with_mask else ['bbox'], format_only=False)
        cfg['val_evaluator'] = cfg['test_evaluator'] = metric
        set_num_classes(cfg, len(TOY_DET_CLASSES))
    else:
        data_root = os.path.join(root, 'seg')
        ann = dict(type='LoadAnnotations', reduce_zero_label=True)
        resize = dict(type='Resize', scale=(img_size, img_size), keep_ratio=False)
        train_pipeline = [dict(type='LoadImageFromFile'), ann, resize, dict(type='PackSegInputs')]
        test_pipeline = [dict(type='LoadImageFromFile'), resize, ann, dict(type='PackSegInputs')]
        folder = dict(train='training', val='validation')

        def dataset(split, pipeline):
            # ADE20K's layout and label convention (0 = unlabelled, reduced away), with the toy classes
            return dict(type='BaseSegDataset', data_root=data_root, reduce_zero_label=True, img_suffix='.jpg',
                        seg_map_suffix='.png',
                        data_prefix=dict(img_path=f'images/{folder[split]}',
                                         seg_map_path=f'annotations/{folder[split]}'),
                        metainfo=dict(classes=TOY_SEG_CLASSES, palette=[[120, 120, 120], [255, 0, 0],
                                                                        [0, 255, 0], [0, 0, 255]]),
                        pipeline=pipeline)

        _loader(cfg, 'train_dataloader', dataset('train', train_pipeline), True, batch_size)
        for key in ('val_dataloader', 'test_dataloader'):
            _loader(cfg, key, dataset(eval_split, test_pipeline), False, 1)
        cfg['val_evaluator'] = cfg['test_evaluator'] = dict(type='IoUMetric', iou_metrics=['mIoU'])
        cfg['model']['data_preprocessor']['size'] = (img_size, img_size)
        set_num_classes(cfg, len(TOY_SEG_CLASSES))
    if iters is not None:
        _short_schedule(cfg, iters, log_interval)
    return cfg


def _short_schedule(cfg, iters: int, log_interval: int) -> None:
    cfg['train_cfg'] = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    cfg['val_cfg'] = dict(type='ValLoop')
    cfg['test_cfg'] = dict(type='TestLoop')
    warmup = max(1, min(20, iters // 10))
    cfg['param_scheduler'] = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=warmup)]
    hooks = cfg.setdefault('default_hooks', {})
    hooks['logger'] = dict(type='LoggerHook', interval=log_interval, log_metric_by_epoch=False)
    hooks['checkpoint'] = dict(type='CheckpointHook', by_epoch=False, interval=iters, max_keep_ckpts=1)
    cfg['log_processor'] = dict(type='LogProcessor', window_size=1, by_epoch=False)
    if cfg.get('train_dataloader', {}).get('sampler', {}).get('type') == 'InfiniteSampler':
        cfg['train_dataloader']['sampler']['type'] = 'DefaultSampler'


def backbone_channels(backbone_cfg: dict) -> List[int]:
    """Output channels of a ZooBackbone config (built without weights)."""
    from .backbone import ZooBackbone
    kwargs = {k: v for k, v in dict(backbone_cfg).items() if k not in ('type', '_scope_')}
    kwargs['pretrained'] = None
    kwargs.pop('init_cfg', None)
    return list(ZooBackbone(**kwargs).channels)


def sync_channels(cfg, channels: Optional[Sequence[int]] = None):
    """Set the neck's (FPN) or the decode/auxiliary heads' in_channels from the backbone's channels."""
    model = cfg['model']
    channels = list(channels) if channels is not None else backbone_channels(model['backbone'])
    neck = model.get('neck')
    if neck is not None:
        neck['in_channels'] = channels
    else:
        head = model['decode_head']
        idx = head.get('in_index', list(range(len(channels))))
        head['in_channels'] = [channels[i] for i in idx] if isinstance(idx, (list, tuple)) else channels[idx]
    aux = model.get('auxiliary_head')
    if aux is not None and neck is None:
        for a in (aux if isinstance(aux, (list, tuple)) else [aux]):
            a['in_channels'] = channels[a['in_index']]
    return cfg
