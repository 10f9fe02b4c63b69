"""scikit-learn's handwritten digits (1797 8x8 grayscale images, 10 classes) written out as an ImageFolder.

A real dataset that needs no download, for tests and the demo: `out/train/<digit>/*.png` and `out/val/...`,
upscaled to RGB PNGs, split per class with a fixed seed. Needs scikit-learn (the `test` extra).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from . import UsageError

__all__ = ['make_digits']


def make_digits(out: str, size: int = 32, val_fraction: float = 0.2, seed: int = 0, force: bool = False) -> dict:
    """Write the digits ImageFolder under `out` (skipped when a complete copy is already there).

    Returns {'train': n, 'val': n}: images per split.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UsageError("the digits dataset needs scikit-learn: pip install -e '.[test]'") from None
    digits = load_digits()
    images = (digits.images * (255. / 16.)).round().clip(0, 255).astype(np.uint8)   # values are 0..16
    targets = digits.target
    rng = np.random.default_rng(seed)
    split = np.empty(len(targets), dtype=object)
    for c in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == c))
        n_val = int(round(len(idx) * val_fraction))
        split[idx[:n_val]], split[idx[n_val:]] = 'val', 'train'
    counts = {s: int((split == s).sum()) for s in ('train', 'val')}

    marker = os.path.join(out, f'.complete_{size}_{val_fraction}_{seed}')
    if os.path.exists(marker) and not force:
        return counts
    for i, (img, c, s) in enumerate(zip(images, targets, split)):
        folder = os.path.join(out, s, str(c))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(img).resize((size, size), Image.BICUBIC).convert('RGB').save(
            os.path.join(folder, f'{i:04d}.png'))
    open(marker, 'w').close()
    return counts
