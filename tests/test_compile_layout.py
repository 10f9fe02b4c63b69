"""How inductor lays out the (B, H, W, C) residual stream of the channels-last families (zoo.layers.residual)."""
import re

import pytest
import timm
import torch
from torch._inductor.utils import run_and_get_code

import zoo  # noqa: F401


@pytest.mark.parametrize('name', ['zoo_focalnet_tiny_srf', 'zoo_swin_tiny'])
def test_compiled_stream_keeps_channels_innermost(name, fresh_dynamo):
    """Every map buffer of a stage width (20 or 40) that inductor allocates stores its channels innermost. Before
    `residual`, inductor's convolution layout rule gave the (B, H, W, C) stream channels-last strides for that
    shape, H innermost ([2, 16, 24, 20] at strides [7680, 1, 320, 16]), and every LayerNorm over C read it at a
    stride."""
    kwargs = dict(img_size=(64, 96), window_size=4, num_heads=(2, 4)) if 'swin' in name else {}
    model = timm.create_model(name, embed_dim=20, depths=(1, 1), num_classes=5, **kwargs).eval()
    with torch.no_grad(), torch._inductor.config.patch(force_disable_caches=True):
        _, codes = run_and_get_code(torch.compile(model), torch.randn(2, 3, 64, 96))
    buffers = re.findall(r'empty_strided_cpu\(\((\d+), (\d+), (\d+), (\d+)\), \((\d+), (\d+), (\d+), (\d+)\)',
                         '\n'.join(codes))
    assert buffers, 'no 4-D buffer found in the generated code: has its format changed?'
    for numbers in buffers:
        shape, stride = [int(n) for n in numbers[:4]], [int(n) for n in numbers[4:]]
        if shape[0] != 2 or not {20, 40} & set(shape[1:]):
            continue  # not a batch-2 map with a stage width
        channel_dim = next(d for d in (1, 2, 3) if shape[d] in (20, 40))
        assert stride[channel_dim] == 1, f'{shape} stored at strides {stride}'
