#!/usr/bin/env python
"""Write small toy data sets that every det/seg config runs on with the `toy` override.

    python tools/make_toy_data.py data/toy [--train 16 --val 8 --size 128]

Images of 1-3 filled shapes (circle, square, triangle) in random colours on a noisy background.
- `<out>/det`: COCO layout: train/*.jpg, val/*.jpg, annotations/instances_{train,val}.json with boxes,
  polygon masks, areas; categories circle=1, square=2, triangle=3.
- `<out>/seg`: ADE20K layout: images/{training,validation}/*.jpg, annotations/{...}/*.png with
  0 = unlabelled (ignored after reduce_zero_label), 1 = background, 2 = circle, 3 = square, 4 = triangle.
Deterministic for a given --seed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ('circle', 'square', 'triangle')


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> List[Tuple[float, float]]:
    if kind == 'circle':
        n, start = 24, 0.
    elif kind == 'square':
        n, start = 4, angle
    else:
        n, start = 3, angle
    return [(cx + r * math.cos(start + 2 * math.pi * k / n), cy + r * math.sin(start + 2 * math.pi * k / n))
            for k in range(n)]


def make_image(rng: np.random.Generator, size: int):
    """An RGB image, its shapes [(class index, polygon)] and a label map (0 background, k+1 shape k)."""
    base = rng.integers(40, 120, size=3)
    img = np.clip(base + rng.normal(0, 8, size=(size, size, 3)), 0, 255).astype(np.uint8)
    canvas = Image.fromarray(img)
    labels = Image.new('L', (size, size), 0)
    draw, ldraw = ImageDraw.Draw(canvas), ImageDraw.Draw(labels)
    shapes, centres = [], []
    for _ in range(int(rng.integers(1, 4))):
        r = float(rng.uniform(0.1, 0.2) * size)
        for _try in range(20):  # keep shapes apart so every instance stays visible
            cx, cy = rng.uniform(r + 2, size - r - 2, size=2)
            if all(math.hypot(cx - x, cy - y) > r + rr + 2 for x, y, rr in centres):
                break
        else:
            continue
        centres.append((cx, cy, r))
        kind = int(rng.integers(0, len(SHAPES)))
        poly = _polygon(SHAPES[kind], cx, cy, r, float(rng.uniform(0, math.pi)))
        colour = tuple(int(c) for c in rng.integers(150, 256, size=3))
        draw.polygon(poly, fill=colour)
        ldraw.polygon(poly, fill=kind + 1)
        shapes.append((kind, poly))
    return canvas, shapes, np.array(labels)


def write_det(out: str, split: str, n: int, size: int, rng: np.random.Generator) -> None:
    os.makedirs(os.path.join(out, split), exist_ok=True)
    os.makedirs(os.path.join(out, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        img, shapes, labels = make_image(rng, size)
        name = f'{i:05d}.jpg'
        img.save(os.path.join(out, split, name), quality=95)
        images.append(dict(id=i + 1, file_name=name, width=size, height=size))
        for kind, poly in shapes:
            xs, ys = [p[0] for p in poly], [p[1] for p in poly]
            x0, y0, x1, y1 = max(min(xs), 0), max(min(ys), 0), min(max(xs), size), min(max(ys), size)
            area = float(0.5 * abs(sum(xs[k] * ys[k - 1] - xs[k - 1] * ys[k] for k in range(len(xs)))))
            annotations.append(dict(
                id=len(annotations) + 1, image_id=i + 1, category_id=kind + 1, iscrowd=0, area=area,
                bbox=[x0, y0, x1 - x0, y1 - y0], segmentation=[[round(c, 2) for p in poly for c in p]]))
    coco = dict(images=images, annotations=annotations,
                categories=[dict(id=k + 1, name=s, supercategory='shape') for k, s in enumerate(SHAPES)])
    with open(os.path.join(out, 'annotations', f'instances_{split}.json'), 'w') as f:
        json.dump(coco, f)


def write_seg(out: str, split: str, n: int, size: int, rng: np.random.Generator) -> None:
    img_dir, ann_dir = os.path.join(out, 'images', split), os.path.join(out, 'annotations', split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for i in range(n):
        img, _, labels = make_image(rng, size)
        img.save(os.path.join(img_dir, f'toy_{i:05d}.jpg'), quality=95)
        Image.fromarray((labels + 1).astype(np.uint8)).save(os.path.join(ann_dir, f'toy_{i:05d}.png'))


def make_toy_data(out: str, n_train: int = 16, n_val: int = 8, size: int = 128, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    write_det(os.path.join(out, 'det'), 'train', n_train, size, rng)
    write_det(os.path.join(out, 'det'), 'val', n_val, size, rng)
    write_seg(os.path.join(out, 'seg'), 'training', n_train, size, rng)
    write_seg(os.path.join(out, 'seg'), 'validation', n_val, size, rng)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('out', nargs='?', default='data/toy')
    p.add_argument('--train', type=int, default=16)
    p.add_argument('--val', type=int, default=8)
    p.add_argument('--size', type=int, default=128)
    p.add_argument('--seed', type=int, default=0)
    a = p.parse_args()
    print(make_toy_data(a.out, a.train, a.val, a.size, a.seed))


if __name__ == '__main__':
    main()
