"""zoo.profile: the MAC counter against analytic counts (SDPA, zoo attention layers, a small Swin, the handles
fvcore lacks), the speed/memory functions on a tiny model, and the compat checks (ONNX + onnxruntime,
torch.compile, TorchScript) on a tiny Swin."""
import os

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from zoo.layers.attention import Attention, WindowAttention
from zoo.profile import (
    BenchOptions, count_macs, count_params, flop_report, format_table, inference_throughput, latency, materialize_zeros,
    meta_parameters, peak_memory, profile_model, train_throughput,
)
from zoo.profile.flops import einsum_macs

torch.set_num_threads(1)


def ln(tokens, dim):  # fvcore's convention for an affine LayerNorm
    return 5 * tokens * dim


def attn_macs(batch, heads, lq, lk, d, dv=None):
    return batch * heads * lq * lk * (d + (dv or d))


def test_dense_attention_layer():
    B, N, C, heads = 2, 16, 32, 4
    rep = flop_report(Attention(C, heads), inputs=torch.randn(B, N, C))
    assert rep['method'] == 'fvcore' and rep['uncounted_ops'] == []
    assert rep['by_operator']['scaled_dot_product_attention'] == attn_macs(B, heads, N, N, C // heads)
    assert rep['by_operator']['linear'] == B * N * C * 3 * C + B * N * C * C
    assert rep['macs'] == attn_macs(B, heads, N, N, C // heads) + 4 * B * N * C * C
    assert 'MACs' in rep['convention'] and rep['gflops'] == pytest.approx(2 * rep['gmacs'])


@pytest.mark.parametrize('H,W', [(8, 8), (6, 10)])  # a window multiple, and a size padded to 8 x 12
def test_window_attention_layer(H, W):
    C, heads, ws = 32, 2, 4
    layer = WindowAttention(C, heads, window_size=(ws, ws), shift_size=(2, 2))
    rep = flop_report(layer, inputs=torch.randn(1, H, W, C))
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    n_windows, tokens = (Hp // ws) * (Wp // ws), Hp * Wp  # projections run on the padded map
    assert rep['by_operator']['scaled_dot_product_attention'] == attn_macs(n_windows, heads, ws * ws, ws * ws, C // heads)
    assert rep['by_operator']['linear'] == tokens * C * 3 * C + tokens * C * C


def test_small_swin_analytic_and_timm():
    cfg = dict(embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4, img_size=32, num_classes=10)
    model = timm.create_model('zoo_swin_tiny', **cfg)
    rep = flop_report(model, 32)
    # stage 1: 8x8 tokens, dim 16, 4 windows of 16; stage 2: 4x4 tokens, dim 32, one window (heads 2)
    t1, c1, t2, c2 = 64, 16, 16, 32
    attn = 2 * attn_macs(4, 1, 16, 16, 16) + 2 * attn_macs(1, 2, 16, 16, 16)
    linear = (2 * (t1 * c1 * 3 * c1 + t1 * c1 * c1 + 2 * t1 * c1 * 4 * c1)
              + t2 * 4 * c1 * c2  # patch merging
              + 2 * (t2 * c2 * 3 * c2 + t2 * c2 * c2 + 2 * t2 * c2 * 4 * c2) + c2 * 10)
    norms = ln(t1, c1) + 2 * 2 * ln(t1, c1) + ln(t2, 4 * c1) + 2 * 2 * ln(t2, c2) + ln(t2, c2)
    conv = t1 * c1 * 3 * 4 * 4
    assert rep['by_operator'] == {'linear': linear, 'scaled_dot_product_attention': attn, 'layer_norm': norms,
                                  'conv': conv}
    assert rep['macs'] == count_macs(model, 32) == linear + attn + norms + conv
    # timm's Swin of the same config computes attention with explicit matmuls: the totals agree
    ref = timm.create_model('swin_tiny_patch4_window7_224', **cfg)
    assert count_macs(ref, 32) == rep['macs']


# families whose counts go through the handles: neighborhood attention (einsum), BiFormer's routing (SDPA, matmul,
# topk on the zero-weight activations), LITv2's deform conv, SHViT's partial-channel SDPA
@pytest.mark.parametrize('name,size', [('zoo_dinat_mini', 112), ('zoo_biformer_tiny', 128), ('zoo_litv2_small', 128),
                                       ('zoo_shvit_s1', 128)])
def test_meta_parameters_count_the_same(name, size):
    """A model built under meta_parameters (no memory, no init) has the normally built model's parameter count,
    and with materialize_zeros its MAC report (per operator, uncounted ops, method) is the normal one: what
    tests/test_paper_numbers.py relies on."""
    torch.manual_seed(0)
    model = timm.create_model(name)
    with meta_parameters():
        meta = timm.create_model(name)
    assert all(p.is_meta for p in meta.parameters()) and not any(b.is_meta for b in meta.buffers())
    assert count_params(meta) == count_params(model)
    assert all(p.requires_grad for p in meta.parameters())
    assert materialize_zeros(meta) is meta and not any(p.is_meta for p in meta.parameters())
    assert flop_report(meta, size) == flop_report(model, size)
    assert nn.Linear(2, 3).weight.device.type == 'cpu'  # the context is left


class _Ops(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(8, 4, 3, 3))

    def forward(self, q, x, offset):
        import torchvision
        return [
            torch.ones(16, 16) @ q,  # broadcast over (2, 3): fvcore alone counts 1/6 of it
            torch.einsum('...nd,...md->...nm', q, q),
            torch.bmm(q.flatten(0, 1), q.flatten(0, 1).transpose(1, 2)),
            torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, q, q)[0],
            torchvision.ops.deform_conv2d(x, offset, self.weight),
        ]


@pytest.mark.parametrize('amp', [False, True])
def test_handles_for_ops_fvcore_misses(amp):
    q, x, off = torch.randn(2, 3, 16, 16), torch.randn(1, 4, 8, 8), torch.zeros(1, 18, 6, 6)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
        rep = flop_report(_Ops(), inputs=(q, x, off))
    mm = 2 * 3 * 16 * 16 * 16
    assert rep['by_operator'] == {
        'matmul': mm, 'einsum': mm, 'bmm': mm, '_scaled_dot_product_flash_attention_for_cpu': 2 * mm,
        'deform_conv2d': 8 * 6 * 6 * 4 * 3 * 3,
    }
    assert rep['uncounted_ops'] == []


def test_einsum_macs():
    assert einsum_macs('bhnd,bhmd->bhnm', [(2, 3, 5, 7), (2, 3, 11, 7)]) == 2 * 3 * 5 * 7 * 11
    assert einsum_macs('...ij,jk', [(4, 2, 3), (3, 5)]) == 4 * 2 * 3 * 5
    # three operands: numpy's optimal path ((a b) then c): 2*3*4 + 2*4*5
    assert einsum_macs('ij,jk,kl->il', [(2, 3), (3, 4), (4, 5)]) == 2 * 3 * 4 + 2 * 4 * 5


def test_dispatch_fallback_counts_cpu_sdpa():
    B, N, C, heads = 1, 8, 16, 2
    rep = flop_report(Attention(C, heads), inputs=torch.randn(B, N, C), method='dispatch')
    assert rep['method'] == 'dispatch'
    assert sum(v for k, v in rep['by_operator'].items() if 'attention' in k) == attn_macs(B, heads, N, N, C // heads)


def _tiny():
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 5))


def test_speed_and_memory_functions():
    opts = BenchOptions(warmup=1, iters=3, threads=1)
    model = _tiny()
    r = inference_throughput(model, 16, 4, opts)
    assert r['img_per_s'] > 0 and r['ms_median'] > 0 and r['batch_size'] == 4 and r['iters'] == 3
    r = latency(model, 16, opts)
    assert r['batch_size'] == 1 and 0 < r['ms_min'] <= r['ms_median'] <= r['ms_p90']
    before = [p.detach().clone() for p in model.parameters()]
    r = train_throughput(model, 16, 4, opts=opts)
    assert r['img_per_s'] > 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # trains a copy
    for mode in ('inference', 'train'):
        m = peak_memory(model, 64, 8, mode, opts)
        assert m['peak_mb'] > 0 and m['peak_mb'] >= m['base_mb'] > 0 and m['increase_mb'] >= 0
        assert 'rss' in m['kind']
    row = profile_model(model, 'tiny', 16, 4, opts=opts)
    for key in ('params_m', 'gmacs', 'gflops', 'infer_img_s', 'latency_ms', 'train_img_s', 'infer_peak_mb',
                'train_peak_mb'):
        assert row[key] > 0, key
    assert 'errors' not in row
    from zoo.profile import context
    table = format_table({'context': context(opts), 'options': dict(opts.to_dict(), batch_size=4, train_batch_size=4,
                                                                     input_size=16), 'results': [row]})
    assert '| tiny |' in table and 'FLOPs = 2 x MACs' in table
    with pytest.raises(TypeError):
        inference_throughput(model, 16, 4, opts, bogus=1)


# --- compat on a tiny Swin ------------------------------------------------------------------------------
def tiny_swin():
    torch.manual_seed(0)
    return timm.create_model('zoo_swin_tiny', embed_dim=16, depths=(2, 1), num_heads=(1, 2), window_size=4,
                             img_size=32, num_classes=10).eval()


def test_onnx_dynamic_batch_matches_pytorch():
    pytest.importorskip('onnxruntime')
    from zoo.profile.compat import check_onnx
    r = check_onnx(tiny_swin(), 32, export_batch=2, check_batches=(1, 3), dynamo=False)
    assert r['ok'], r
    assert r['exporter'] == 'torchscript'
    assert set(r['max_abs_diff']) == {'1', '3'} and max(r['max_abs_diff'].values()) < 1e-4


@pytest.mark.slow
def test_onnx_dynamo_exporter_then_eager_still_works():  # torch.export: minutes on a busy 2-core machine
    pytest.importorskip('onnxruntime')
    pytest.importorskip('onnxscript')
    from zoo.profile.compat import check_onnx, check_torchscript
    model = tiny_swin()
    r = check_onnx(model, 32, export_batch=2, check_batches=(1, 3), dynamo=True)
    assert r['ok'] and r['exporter'] == 'dynamo', r
    # the export ran the model on fake tensors; cached window masks/orders must not leak into eager runs
    assert check_torchscript(model, 32, script=False)['trace']['ok']


def test_compile_matches_eager_without_graph_breaks():
    from zoo.profile.compat import check_compile
    # fullgraph=True: a graph break would raise, so ok means one graph per size and no breaks
    r = check_compile(tiny_swin(), sizes=(32, (32, 48)), backend='aot_eager', explain=False, fullgraph=True)
    assert r['ok'], r
    assert all(s['max_abs_diff'] < 1e-4 for s in r['sizes'].values()) and len(r['sizes']) == 2


def test_compiled_model_does_not_recompile_on_its_second_call():
    """The attention dispatch's per-thread state exists before the first call: a lazily created attribute made
    dynamo guard on its absence and recompile every model on the second call."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    model, x = tiny_swin(), torch.randn(1, 3, 32, 32)
    compiled = torch.compile(model, backend='eager')
    with torch.no_grad():
        for _ in range(3):
            compiled(x)
    assert counters['stats']['unique_graphs'] == 1
    torch._dynamo.reset()


@pytest.mark.slow
def test_compile_inductor_matches_eager():  # C++ codegen: minutes on a busy 2-core machine
    from zoo.profile.compat import check_compile
    r = check_compile(tiny_swin(), sizes=(32, (32, 48)), backend='inductor')
    assert r['ok'], r
    assert r['graph_break_count'] == 0 and r['graph_count'] == 1


def test_torchscript_trace_matches():
    from zoo.profile.compat import check_torchscript
    r = check_torchscript(tiny_swin(), 32, script=False)
    assert r['trace']['ok'], r


def test_vs_timm_checks_parity_then_times_each_model_in_its_own_process():
    from zoo.profile import BenchOptions
    from zoo.profile.vs_timm import compare_pair
    row = compare_pair('zoo_shvit_s1', 'shvit_s1', input_size=64, batch_size=2, opts=BenchOptions(threads=1, warmup=1),
                       rounds=2, iters_per_round=1)
    assert row['identical'] and row['max_abs_diff'] < 1e-4, row
    assert row['zoo_ms'] > 0 and row['timm_ms'] > 0 and len(row['ratio_rounds']) == 2
    # the ratio is the median of the paired per-round ratios, the IQR brackets it
    assert row['ratio'] == pytest.approx(sum(row['ratio_rounds']) / 2)
    assert row['ratio_iqr'][0] <= row['ratio'] <= row['ratio_iqr'][1]


def test_vs_timm_train_mode_times_training_steps_and_reports_peak_memory():
    from zoo.profile.vs_timm import compare, format_compare
    report = compare({'zoo_shvit_s1': 'shvit_s1'}, input_size=64, batch_size=2, opts=BenchOptions(threads=1, warmup=1),
                     rounds=2, iters_per_round=1, progress=False, mode='train', grad_checkpointing=True)
    row = report['results'][0]
    assert row['identical'] and row['mode'] == 'train' and row['grad_checkpointing'], row
    assert len(row['ratio_rounds']) == 2 and row['zoo_ms'] > 0 and row['timm_ms'] > 0
    # each process's own high-water mark: at least the ~200 MB torch + timm import, not the parent's
    assert 200 < row['zoo_peak_mb'] < 4000 and 200 < row['timm_peak_mb'] < 4000 and 'VmHWM' in row['memory_kind']
    assert report['options']['mode'] == 'train'
    table = format_compare(report)
    assert 'peak MB zoo / timm' in table and 'training steps (forward + backward + AdamW), grad checkpointing' in table
    from zoo.profile.vs_timm import compare_pair
    with pytest.raises(ValueError, match='mode'):
        compare_pair('zoo_shvit_s1', 'shvit_s1', mode='eval')


def test_vs_timm_cli_plumbs_train_and_compile(monkeypatch):
    import importlib.util
    from zoo.profile import vs_timm
    spec = importlib.util.spec_from_file_location('benchmark_vs_timm', os.path.join(
        os.path.dirname(__file__), '..', 'tools', 'benchmark_vs_timm.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    seen = {}

    def fake_compare(pairs, input_size, batch_size, opts, rounds, iters, atol, **kwargs):
        seen.update(kwargs, opts=opts, pairs=pairs)
        return {'context': {}, 'options': {}, 'results': []}
    monkeypatch.setattr(tool, 'compare', fake_compare)
    monkeypatch.setattr(tool, 'format_compare', lambda report: '')
    tool.main(['zoo_shvit_s1', '--train', '--grad-checkpointing', '--compile', '--amp', 'bf16'])
    assert seen['mode'] == 'train' and seen['grad_checkpointing'] and seen['opts'].compile is True
    assert seen['opts'].amp == 'bf16' and list(seen['pairs']) == ['zoo_shvit_s1']
    with pytest.raises(SystemExit):
        tool.main(['zoo_shvit_s1', '--grad-checkpointing'])  # needs --train
    assert vs_timm.compare is not fake_compare


@pytest.mark.slow
def test_vs_timm_compiled_reports_compile_time_graphs_and_recompiles():  # inductor: ~2 min on 2 busy cores
    from zoo.profile.vs_timm import compare_pair
    row = compare_pair('zoo_shvit_s1', 'shvit_s1', input_size=64, batch_size=2,
                       opts=BenchOptions(threads=1, warmup=2, compile=True), rounds=2, iters_per_round=1)
    assert row['identical'] and row['second_size'] == [96, 96], row
    assert row['zoo_compile_s'] > 0 and row['timm_compile_s'] > 0
    # one graph at the input size (no recompile on the second call, no graph break), one more at the second size
    assert row['zoo_graphs'] == 1 and row['zoo_graph_breaks'] == 0 and row['zoo_second_size_graphs'] == 1


def test_fault_free_environment_is_set_for_the_block_only(monkeypatch):
    from zoo.profile.vs_timm import KEEP_FREED_ENV, _environment
    monkeypatch.setenv('MALLOC_TOP_PAD_', '7')
    monkeypatch.delenv('MALLOC_MMAP_THRESHOLD_', raising=False)
    with _environment(KEEP_FREED_ENV):
        assert all(os.environ[k] == v for k, v in KEEP_FREED_ENV.items())
    assert os.environ['MALLOC_TOP_PAD_'] == '7' and 'MALLOC_MMAP_THRESHOLD_' not in os.environ


def test_vs_timm_pools_the_rounds_of_several_runs():
    from zoo.profile.vs_timm import format_pooled, pool_reports

    def run(ratios, failed=False):
        rows = [{'zoo': 'zoo_a', 'timm': 'a', 'zoo_img_s': 2., 'timm_img_s': 1., 'ratio': sorted(ratios)[1],
                 'ratio_rounds': ratios}]
        return {'results': rows + [{'zoo': 'zoo_b', 'timm': 'b', 'error': 'x'}] if failed else rows}

    rows = pool_reports([run([1.0, 1.1, 1.2]), run([1.3, 1.4, 1.5], failed=True)])
    assert len(rows) == 1 and rows[0]['run_ratios'] == [1.1, 1.4]  # the failed pair has no row
    assert rows[0]['ratio'] == pytest.approx(1.25)  # the median of all six rounds, not of the two run medians
    assert rows[0]['ratio_iqr'] == pytest.approx([1.1 + 0.25 * 0.1, 1.4 - 0.25 * 0.1])
    table = format_pooled(rows)
    assert '| zoo_a | a | 2.0 / 2.0 | 1.0 / 1.0 | 1.10x | 1.40x | **1.25x** (' in table and '6 rounds) |' in table
