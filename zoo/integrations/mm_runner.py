"""The body of tools/{train,test}_{det,seg}.py: mmengine's Runner on a zoo config.

    python tools/train_det.py configs/det/swin/mask_rcnn_zoo_swin_tiny_fpn_ms_1x_coco.py [--work-dir DIR]
        [--resume [CKPT]] [--cfg-options k=v ...] [--launcher pytorch] [--cpu] [--toy [ROOT] --iters N]
    torchrun --nproc_per_node 8 tools/train_det.py CONFIG --launcher pytorch
    python tools/test_det.py CONFIG CHECKPOINT [...]

--cpu applies `mm_config.to_cpu` (SyncBN -> BN, no AMP); --toy points the config at the toy data
(tools/make_toy_data.py, written on first use) and implies --cpu when no GPU is present. Checkpoint files
(--resume FILE, test CHECKPOINT, the backbone's `pretrained`) are checked before anything is built; a broken or
unsafe one is one line `error: ...` and exit status 2 (zoo.models._load).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import Optional, Sequence

from . import mm_config

__all__ = ['parse_args', 'load_config', 'run', 'main']


def parse_args(mode: str, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description=f'{mode} a zoo detection/segmentation config with mmengine')
    p.add_argument('config')
    if mode == 'test':
        p.add_argument('checkpoint')
    p.add_argument('--work-dir', help='where logs and checkpoints go (default: work_dirs/<config name>)')
    if mode == 'train':
        p.add_argument('--resume', nargs='?', type=str, const='auto',
                       help='resume from this checkpoint, or the latest in the work dir when no path is given')
        p.add_argument('--amp', action='store_true', help='mixed precision (AmpOptimWrapper)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='override config entries, e.g. model.backbone.pretrained=None train_dataloader.batch_size=1')
    p.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    p.add_argument('--local_rank', '--local-rank', type=int, default=0)
    p.add_argument('--cpu', action='store_true', help='SyncBN -> BN and no AMP, for CPU runs')
    p.add_argument('--toy', nargs='?', const='data/toy', default=None, metavar='ROOT',
                   help='use the toy data under ROOT (default data/toy; made if missing)')
    p.add_argument('--toy-size', type=int, default=128, help='toy image size')
    p.add_argument('--toy-eval', choices=['val', 'train'], default='val',
                   help='evaluate on the toy validation images or on the training images (a fit check)')
    p.add_argument('--iters', type=int, default=None, help='with --toy: a short schedule of this many iterations')
    args = p.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def load_config(args: argparse.Namespace):
    import torch
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    if args.toy is not None:
        if not osp.isdir(osp.join(args.toy, 'det')):
            import importlib.util
            spec = importlib.util.spec_from_file_location(
                'make_toy_data', osp.join(osp.dirname(__file__), '..', '..', 'tools', 'make_toy_data.py'))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            module.make_toy_data(args.toy)
        mm_config.use_toy_data(cfg, args.toy, img_size=args.toy_size, eval_split=args.toy_eval, iters=args.iters)
    if args.cpu or (args.toy is not None and not torch.cuda.is_available()):
        mm_config.to_cpu(cfg)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    cfg.work_dir = args.work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0])
    if 'resume' in args:  # training: ZooCheckpointHook, so a run killed mid-save resumes from its last checkpoint
        mm_config.safe_checkpoints(cfg)
    if getattr(args, 'amp', False):
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    resume = getattr(args, 'resume', None)
    if resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif resume is not None:
        cfg.resume, cfg.load_from = True, resume
    if getattr(args, 'checkpoint', None):
        cfg.load_from = args.checkpoint
    return cfg


def check_checkpoints(cfg) -> None:
    """The checkpoint files the config names (load_from / resume file, the backbone's `pretrained`), checked
    before anything is built: zoo.models._load's one error for a missing, broken, foreign or unsafe file."""
    from ..models._load import check_checkpoint_file
    pretrained = cfg.model.get('backbone', {}).get('pretrained')
    for path in (cfg.get('load_from'), pretrained if isinstance(pretrained, str) else None):
        if path and '://' not in path:   # URLs and mmengine's model-zoo names are read (safely) when used
            check_checkpoint_file(path)


def run(mode: str, task: str, argv: Optional[Sequence[str]] = None):
    """Train or test; returns the Runner's result (test metrics for 'test', the model for 'train')."""
    from mmengine.runner import Runner
    args = parse_args(mode, argv)
    cfg = load_config(args)
    check_checkpoints(cfg)
    if mm_config.task_of(cfg) != task:
        raise SystemExit(f'{args.config} is a {mm_config.task_of(cfg)} config; use tools/{mode}_'
                         f'{mm_config.task_of(cfg)}.py')
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    return runner.train() if mode == 'train' else runner.test()


def main(mode: str, task: str, argv: Optional[Sequence[str]] = None) -> int:
    """`run` for the tools: a bad checkpoint file is one line `error: ...` and exit status 2."""
    from ..models._load import CheckpointFileError
    try:
        run(mode, task, argv)
    except CheckpointFileError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0
