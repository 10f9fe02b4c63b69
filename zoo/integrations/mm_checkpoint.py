"""Checkpoints that survive a crash, for mmengine runs (registered by zoo.integrations.mm; the zoo's train tools
switch every config's `CheckpointHook` to `ZooCheckpointHook` through `mm_config.safe_checkpoints`).

mmengine 0.10's CheckpointHook, killed while it saves, can lose the run: it deletes the oldest kept checkpoint
*before* writing the new one (with max_keep_ckpts=1 nothing is left to resume from), writes the new file in place
(a truncated `iter_N.pth`) and never fsyncs. It also keeps no RNG state, so a resumed run draws other RoI samples
and drop-path masks than the uninterrupted one. ZooCheckpointHook:
- writes checkpoints through `zoo_atomic_local` (temp file, fsync, rename: zoo.train.checkpoint.write_atomic);
- deletes the oldest kept checkpoint only after the new one and `last_checkpoint` are written;
- stores this process's RNG states (single-process runs) and restores them before the first iteration after a
  resume, and gives the training DataLoader its own generator, so creating its iterator (at every epoch start,
  and when a resumed IterBasedTrainLoop skips the batches already seen) draws nothing from the global RNG.
  Resuming is then exact when the data pipeline draws no random numbers in the main process (data workers are
  re-seeded by mmengine; a random transform run with num_workers=0 replays the skipped batches' draws).
"""
from __future__ import annotations

import os.path as osp
from collections import deque

import torch
from mmengine.dist import get_world_size, is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS
from mmengine.utils import mkdir_or_exist

from zoo.train.checkpoint import get_rng_state, set_rng_state, write_atomic

__all__ = ['AtomicLocalBackend', 'ZooCheckpointHook']


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend with crash-safe writes."""

    def put(self, obj: bytes, filepath) -> None:
        mkdir_or_exist(osp.dirname(osp.abspath(str(filepath))))
        write_atomic(str(filepath), lambda f: f.write(obj))

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


register_backend('zoo_atomic_local', AtomicLocalBackend, force=True)


@HOOKS.register_module(force=True)
class ZooCheckpointHook(CheckpointHook):
    """CheckpointHook that loses nothing when the process dies mid-save, and resumes with the RNG where it was."""

    def __init__(self, *args, backend_args=None, file_client_args=None, out_dir=None, **kwargs):
        if backend_args is None and file_client_args is None and '://' not in str(out_dir or ''):
            backend_args = dict(backend='zoo_atomic_local')
        super().__init__(*args, backend_args=backend_args, file_client_args=file_client_args, out_dir=out_dir,
                         **kwargs)
        self._rng_to_restore = None

    def _save_checkpoint_with_step(self, runner, step, meta):
        keep = self.max_keep_ckpts
        if keep <= 0:
            return super()._save_checkpoint_with_step(runner, step, meta)
        # one more slot while saving, so mmengine removes nothing before the new checkpoint exists
        self.max_keep_ckpts, self.keep_ckpt_ids = keep + 1, deque(self.keep_ckpt_ids, keep + 1)
        try:
            super()._save_checkpoint_with_step(runner, step, meta)
        finally:
            self.max_keep_ckpts = keep
        while len(self.keep_ckpt_ids) > keep:
            old = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(self.keep_ckpt_ids.popleft()))
            if is_main_process() and self.file_backend.isfile(old):
                self.file_backend.remove(old)
            elif is_main_process() and self.file_backend.isdir(old):  # deepspeed checkpoints are folders
                self.file_backend.rmtree(old)
        self.keep_ckpt_ids = deque(self.keep_ckpt_ids, keep)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

    # -- RNG state ---------------------------------------------------------------------------------------------
    def before_train(self, runner) -> None:
        super().before_train(runner)
        loader = runner.train_loop.dataloader
        if getattr(loader, 'generator', 'none') is None:  # a torch DataLoader without a generator of its own
            loader.generator = torch.Generator().manual_seed(runner.seed or 0)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if get_world_size() == 1:  # other ranks' states are not gathered: they re-seed as mmengine does
            checkpoint['zoo_rng'] = get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('zoo_rng')
        if state is not None and get_world_size() == 1:
            self._rng_to_restore = (checkpoint.get('meta', {}).get('iter'), state)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._rng_to_restore is not None:
            at_iter, state = self._rng_to_restore
            self._rng_to_restore = None
            if runner.iter == at_iter:  # a resume (not `load_from`, which starts again at iteration 0)
                set_rng_state(state)
