"""Deployment checks on the smallest variant of every family (random weights, small input):

- ONNX export with a dynamic batch dimension (the torch.export-based exporter), run in onnxruntime at batch
  1 and 3, equal to eager PyTorch within 1e-4 (relative to the output's scale);
- torch.compile (backend 'aot_eager': the full dynamo + AOTAutograd trace without inductor's C++ codegen,
  which takes minutes per model on CPU), fullgraph=True so any graph break fails, equal within 1e-4. One input
  size only (a second size is one more static graph: Backbone.check_input specializes H and W under dynamo;
  tests/test_swin.py checks that); tools/compat.py compiles a second size (192x256).

Slow (about 75 s per family on a busy 2-core machine, 22 min in all): run with --runslow. docs/COMPAT.md
(tools/compat.py) has the same checks at 224 px (and 192x256), TorchScript, and the root cause of every known
failure.
"""
import pytest
import timm
import torch

from zoo.profile.compat import check_compile, check_onnx, smallest_per_family

pytestmark = pytest.mark.slow

MODELS = smallest_per_family()
SIZE = 64  # the largest min_input_size of these models (SHViT: 64); checked per model below


def _model(name):
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    assert max(model.min_input_size) <= SIZE, (name, model.min_input_size)
    return model


@pytest.mark.parametrize('name', MODELS)
def test_onnx_dynamic_batch_matches_eager(name):
    pytest.importorskip('onnxruntime')
    pytest.importorskip('onnxscript')
    r = check_onnx(_model(name), SIZE, export_batch=2, check_batches=(1, 3), atol=1e-4, dynamo=True)
    assert r['ok'], r
    assert r['exporter'] == 'dynamo' and set(r['max_abs_diff']) == {'1', '3'}


@pytest.mark.parametrize('name', MODELS)
def test_compile_matches_eager(name):
    # fullgraph: any graph break raises (NAT/DiNAT's torch.unique break is gone: shape_cache(constant_under_export))
    r = check_compile(_model(name), sizes=(SIZE,), backend='aot_eager', atol=1e-4, explain=False, fullgraph=True)
    assert r['ok'], r
    assert r['sizes'][f'{SIZE}x{SIZE}']['equal']
