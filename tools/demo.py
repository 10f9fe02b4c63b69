#!/usr/bin/env python
"""`make demo`: build zoo models through timm, load a checkpoint written in the authors' layout,
classify the bundled sample image, and print params / GMACs / img/s measured on this machine.

Released weights cannot be downloaded here, so the checkpoint holds seeded random weights saved under the
official Swin release's key names; the predicted labels are therefore arbitrary, the loading path is real.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import timm
import torch
from PIL import Image
from timm.data import ImageNetInfo, create_transform, resolve_data_config

import zoo
from zoo.models.swin import to_official_layout
from zoo.profile import count_macs, count_params

ROOT = Path(__file__).resolve().parent.parent


def smallest_per_family():
    """The first-listed tiny-ish variant of each registered family."""
    chosen = {}
    for name in zoo.list_models():
        family = name.split('_')[1]
        best = chosen.get(family)
        if best is None or count_key(name) < count_key(best):
            chosen[family] = name
    return sorted(chosen.values())


def count_key(name: str):
    order = ('mini', 'tiny', 's1', 's12', 'small', 'medium', 'base', 'large')
    for i, tag in enumerate(order):
        if f'_{tag}' in name:
            return i, len(name)
    return len(order), len(name)


@torch.no_grad()
def images_per_second(model, size=224, batch=4, iters=3):
    x = torch.randn(batch, 3, size, size)
    model(x)  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        model(x)
    return batch * iters / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--models', nargs='*', help='models for the table (default: smallest of each family)')
    parser.add_argument('--image', default=str(ROOT / 'assets' / 'flower.jpg'))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    print(f'zoo {zoo.__version__}: {len(zoo.list_models())} models registered in timm, e.g. {zoo.list_models()[:4]}')

    # 1. a checkpoint in the official Swin release layout, loaded strictly through the zoo filter
    torch.manual_seed(0)
    source = timm.create_model('zoo_swin_tiny').eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / 'swin_tiny_patch4_window7_224.pth'
        torch.save(to_official_layout(source), path)
        model = timm.create_model('zoo_swin_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    model.eval()
    keys = len(to_official_layout(source)['model'])
    print(f'loaded {path.name} ({keys} tensors, official layout: layers.*, head.*, relative_position_index, '
          f'attn_mask) into zoo_swin_tiny with strict=True')

    # 2. classify the sample image with the model's own eval transform
    transform = create_transform(**resolve_data_config(model=model))
    x = transform(Image.open(args.image).convert('RGB')).unsqueeze(0)
    with torch.no_grad():
        logits = model(x)
        same = torch.allclose(logits, source(x), atol=1e-5)
    probs = logits.softmax(-1)[0]
    info = ImageNetInfo()
    print(f'{Path(args.image).name} -> top-3 (random weights, so the labels are arbitrary; outputs equal the '
          f'source model: {same}):')
    for p, i in zip(*probs.topk(3)):
        print(f'  {info.index_to_description(i.item()):40s} {p.item():.4f}')

    # 3. the table
    names = args.models or smallest_per_family()
    print(f'\n{"model":28s} {"params (M)":>10s} {"GMACs":>8s} {"img/s":>8s}   (224x224, batch 4, '
          f'{torch.get_num_threads()} threads, fp32, this machine)')
    for name in names:
        m = timm.create_model(name).eval()
        print(f'{name:28s} {count_params(m) / 1e6:10.2f} {count_macs(m, 224) / 1e9:8.2f} '
              f'{images_per_second(m):8.1f}')


if __name__ == '__main__':
    main()
