"""Data for classification: ImageFolder checks, skip-and-count of unreadable images, a resumable sampler, loaders.

Datasets come from timm's `create_dataset` (folder reader) and transforms from timm's `create_transform`. The
loader is a plain torch DataLoader because timm's `create_loader` has no hook for the sampler that exact resume
needs:

* `ResumableBatchSampler` draws one permutation per epoch from (seed, epoch) alone, splits every *global* batch
  into `world_size` contiguous slices (so N processes see exactly the samples one process would see with the same
  global batch) and can start at any step inside an epoch.
* Each sample's random augmentation runs under an RNG seeded from (seed, epoch, index), so what a sample looks
  like does not depend on the number of workers or processes, nor on where a run was interrupted.
"""
from __future__ import annotations

import contextlib
import logging
import os
import random
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from timm.data import create_dataset, create_transform
from timm.data.readers.img_extensions import get_img_extensions
from timm.utils.misc import natural_key
from torch.utils.data import DataLoader, Dataset
from torch.utils.data._utils.collate import default_collate

from . import UsageError

_logger = logging.getLogger(__name__)

__all__ = ['find_split', 'check_image_folder', 'SkipUnreadable', 'ResumableBatchSampler', 'ShardSampler',
           'collate_skip', 'build_train_loader', 'build_eval_loader']

_TRAIN_NAMES = ('train', 'training')
_EVAL_NAMES = ('val', 'valid', 'validation', 'eval', 'evaluation')


def find_split(root: str, split: str) -> str:
    """The folder of `split` under `root`: `root/split` or a usual synonym (val -> validation, ...)."""
    if not os.path.isdir(root):
        raise UsageError(f'data dir not found: {root}')
    names = [split] + list(_TRAIN_NAMES if split in _TRAIN_NAMES else _EVAL_NAMES if split in _EVAL_NAMES else ())
    for name in names:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            return path
    raise UsageError(f"no '{split}' folder in {root} (expected ImageFolder layout {root}/{split}/<class>/<image>)")


def check_image_folder(folder: str) -> Dict[str, int]:
    """Check an ImageFolder (one sub-folder of images per class) and return its class -> index map.

    timm's folder reader silently drops a class folder without images, which shifts every later class index;
    here that is an error instead, as are a missing folder and a folder without class sub-folders.
    """
    if not os.path.isdir(folder):
        raise UsageError(f'data dir not found: {folder}')
    classes = sorted((e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith('.')),
                     key=natural_key)
    if not classes:
        raise UsageError(f'no class folders in {folder} (expected ImageFolder layout: {folder}/<class>/<image>)')
    exts = get_img_extensions(as_set=True)
    for name in classes:
        if not _has_image(os.path.join(folder, name), exts):
            raise UsageError(f'empty class folder: {os.path.join(folder, name)} '
                             f'(no {"/".join(sorted(exts))} files)')
    return {c: i for i, c in enumerate(classes)}


def _has_image(folder: str, exts) -> bool:
    for root, _, files in os.walk(folder, followlinks=True):
        if any(os.path.splitext(f)[1].lower() in exts for f in files):
            return True
    return False


@contextlib.contextmanager
def _seeded(seed: int):
    """Run a block under torch/random/numpy RNGs seeded with `seed`. In the main process (num_workers=0) the
    caller's RNG states are restored afterwards; a worker process's own RNG state matters to nobody."""
    in_worker = torch.utils.data.get_worker_info() is not None
    if not in_worker:
        states = torch.default_generator.get_state(), random.getstate(), np.random.get_state()
    torch.default_generator.manual_seed(seed)    # (torch.manual_seed also seeds every accelerator: 40x slower)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    try:
        yield
    finally:
        if not in_worker:
            torch.default_generator.set_state(states[0])
            random.setstate(states[1])
            np.random.set_state(states[2])


class SkipUnreadable(Dataset):
    """Wraps a timm ImageDataset: an image that cannot be read or decoded gives None (logged once, then skipped
    and counted by `collate_skip`) instead of timm's silent substitution by the next sample.

    Indices may be `(epoch, index)` pairs (from ResumableBatchSampler): the transform then runs under an RNG
    seeded from (seed, epoch, index).
    """

    def __init__(self, dataset, seed: int = 0):
        self.dataset = dataset
        self.reader = dataset.reader
        self.transform = dataset.transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, item):
        if isinstance(item, tuple):
            epoch, index = item
            with _seeded(((self.seed * 1_000_003 + epoch) * 10_000_019 + index) % 2 ** 63):
                return self._load(index)
        return self._load(item)

    def _load(self, index: int):
        path, target = self.reader[index][:2]
        try:
            img = Image.open(path)
            img = img.convert(self.dataset.input_img_mode or 'RGB')  # decodes, so truncated files fail here
        except (OSError, ValueError, SyntaxError) as e:
            _logger.warning('skipped unreadable image %s (%s)', path, e)
            return None
        if self.transform is not None:
            img = self.transform(img)
        return img, target


def collate_skip(batch: List[Optional[Tuple]]):
    """Collate, dropping the None entries of unreadable images: returns (images, targets, number skipped);
    images and targets are None when the whole batch was unreadable."""
    good = [b for b in batch if b is not None]
    skipped = len(batch) - len(good)
    if not good:
        return None, None, skipped
    images, targets = default_collate(good)
    return images, targets, skipped


class ResumableBatchSampler:
    """Per-epoch shuffled batches, identical for any world size, resumable at any step (see module doc).

    Yields lists of (epoch, index) for this rank: the slice [rank * b, (rank + 1) * b) of each global batch of
    `global_batch` samples, b = global_batch // world_size. The last incomplete global batch is dropped.
    """

    def __init__(self, num_samples: int, global_batch: int, world_size: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True):
        if global_batch % world_size:
            raise UsageError(f'batch size {global_batch} is not divisible by the number of processes {world_size}')
        if num_samples < global_batch:
            raise UsageError(f'the training set has {num_samples} images, fewer than one batch of {global_batch}')
        self.num_samples, self.global_batch, self.world_size, self.rank = num_samples, global_batch, world_size, rank
        self.local_batch = global_batch // world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return self.num_samples // self.global_batch - self.start_step

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_samples)
        lo = self.rank * self.local_batch
        for step in range(self.start_step, self.num_samples // self.global_batch):
            batch = order[step * self.global_batch:(step + 1) * self.global_batch][lo:lo + self.local_batch]
            yield [(self.epoch, int(i)) for i in batch]


class ShardSampler:
    """Evaluation: rank r takes samples r, r + world, r + 2 world, ... (no padding, so sums over ranks are exact)."""

    def __init__(self, num_samples: int, world_size: int = 1, rank: int = 0):
        self.indices = list(range(rank, num_samples, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


def _dataset(folder: str, class_map: Dict[str, int], transform):
    ds = create_dataset('', root=folder, split='', search_split=False, class_map=class_map, transform=transform)
    if len(ds) == 0:
        raise UsageError(f'no images found in {folder}')
    return ds


def build_train_loader(folder: str, class_map: Dict[str, int], data_config: Dict, args, world_size: int = 1,
                       rank: int = 0) -> DataLoader:
    """Training loader with timm's train transform (RandAugment, random erasing, ... from `args`)."""
    transform = create_transform(
        data_config['input_size'], is_training=True, no_aug=args.no_aug, scale=args.scale, ratio=args.ratio,
        hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter, auto_augment=args.aa,
        interpolation=args.train_interpolation, mean=data_config['mean'], std=data_config['std'],
        re_prob=args.reprob, re_mode=args.remode, re_count=args.recount)
    dataset = SkipUnreadable(_dataset(folder, class_map, transform), seed=args.seed)
    sampler = ResumableBatchSampler(len(dataset), args.batch_size, world_size, rank, seed=args.seed)
    # an own generator: creating an iterator must not draw from the global RNG (that would break exact resume)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=args.workers, collate_fn=collate_skip,
                      pin_memory=torch.cuda.is_available(), persistent_workers=args.workers > 0,
                      generator=torch.Generator().manual_seed(args.seed))


def build_eval_loader(folder: str, class_map: Dict[str, int], data_config: Dict, batch_size: int,
                      workers: int = 0, world_size: int = 1, rank: int = 0) -> DataLoader:
    """Evaluation loader with timm's eval transform (resize by crop_pct, center crop, normalize)."""
    transform = create_transform(
        data_config['input_size'], is_training=False, interpolation=data_config['interpolation'],
        mean=data_config['mean'], std=data_config['std'], crop_pct=data_config['crop_pct'],
        crop_mode=data_config.get('crop_mode'))
    dataset = SkipUnreadable(_dataset(folder, class_map, transform))
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset), world_size, rank),
                      num_workers=workers, collate_fn=collate_skip, pin_memory=torch.cuda.is_available(),
                      generator=torch.Generator().manual_seed(0))
