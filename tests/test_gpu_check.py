"""tools/gpu_check.py's dry run (--device cpu --quick), so the GPU check cannot rot before a GPU arrives: every
section runs, writes its JSON and markdown, and each backend row holds its backend to the reference."""
import json
import runpy
from pathlib import Path

import pytest
import torch

TOOL = Path(__file__).resolve().parent.parent / 'tools' / 'gpu_check.py'


def _main(argv):
    # run_path, not an import through sys.path: other tests' tools runs may leave sys.path without tools/
    return runpy.run_path(str(TOOL))['main'](argv)


def test_gpu_check_quick_dry_run_on_cpu(tmp_path):  # ~60 s on 2 busy cores (two timing processes, DiNAT-T at 64 px)
    assert _main(['--device', 'cpu', '--quick', '--threads', '1', '--out', str(tmp_path)]) == 0
    report = json.loads((tmp_path / 'gpu_check.json').read_text())
    assert report['failures'] == []
    from zoo.layers.attention import list_ops
    backends = {(r['op'], r['backend']) for r in report['backends']}
    assert backends == {(op, b) for op, names in list_ops().items() for b in names if b != 'reference'}
    ran = [r for r in report['backends'] if r['status'] == 'ok']
    assert {r['op'] for r in ran} == set(list_ops()) and {r['dtype'] for r in ran} == {'fp32', 'bf16'}
    assert all(r['forward_error'] < 1e-4 for r in ran if r['dtype'] == 'fp32')
    assert any(r['backend'] == 'sdpa' and 'backward_error' in r for r in ran)
    assert [r['status'] for r in report['train']] == ['ok'] and report['train'][0]['output_dtype'] == 'bfloat16'
    (pair,) = report['vs_timm']
    assert pair['mode'] == 'train' and pair['ratio'] > 0 and pair['zoo_peak_mb'] > 0
    assert {(r['backend'], r['rpb'], r['mode']) for r in report['dinat'] if r['status'] == 'ok'} == {
        ('cpu', rpb, mode) for rpb in (True, False) for mode in ('inference', 'train')}
    table = (tmp_path / 'gpu_check.md').read_text()
    assert '| dense | sdpa | self 49 tokens + bias | fp32 |' in table and 'Failures: 0' in table


def test_gpu_check_counts_failures_and_limits():
    from zoo.profile.gpu_check import failures
    report = {'backends': [{'op': 'dense', 'backend': 'sdpa', 'call': 'c', 'dtype': 'bf16', 'status': 'MISMATCH'},
                           {'op': 'dense', 'backend': 'native', 'call': 'c', 'dtype': 'bf16', 'status': 'n/a'},
                           {'op': 'dense', 'backend': 'sdpa[FLASH_ATTENTION]', 'call': 'c', 'dtype': 'bf16',
                            'status': 'n/a (FLASH_ATTENTION refuses these inputs)'},
                           {'op': 'x', 'backend': 'y', 'call': 'c', 'dtype': 'fp32', 'status': 'skipped (time)'}],
              'train': [{'model': 'zoo_a', 'status': 'NON-FINITE'}],
              'vs_timm': [{'zoo': 'zoo_a', 'timm': 'a', 'mode': 'train', 'error': 'skipped (section time limit)'}]}
    assert failures(report) == ['backend dense/sdpa c bf16: MISMATCH', 'zoo_a train step: NON-FINITE']
    with pytest.raises(SystemExit):
        _main(['--out', '/tmp/unused', '--device', 'cpu', '--limit', 'bogus=3'])
    with pytest.raises(SystemExit):
        _main(['--out', '/tmp/unused', '--device', 'cpu', '--sections', 'backends,bogus'])


def test_gpu_check_bf16_rows_also_meet_the_fp32_reference():
    """A bf16 call gets the bf16 reference and the fp32 one on the same rounded inputs; the tiled path's bf16 rpb
    gradient (fp32 sums) is closer to the fp32 one than the bf16 reference's own sums are."""
    from zoo.layers.attention import get_op
    from zoo.profile.gpu_check import _calls, _cast, _error, _references, _run_op
    op = get_op('neighborhood')
    label, make = _calls(False)['neighborhood'][-1]  # 3-D, causal, strided, with an rpb
    args, kwargs = _cast(*make(torch.Generator().manual_seed(0), torch.device('cpu')), torch.bfloat16, grad=True)
    (ref16, grads16), (ref32, grads32) = _references(op, args, kwargs)
    assert ref16.dtype == torch.bfloat16 and ref32.dtype == torch.float32
    _, grads = _run_op(op, 'cpu', *_cast(args, kwargs, torch.bfloat16, grad=True), grad=True)
    rpb = -1  # the rpb table's gradient, the last input
    assert _error(grads[rpb], grads32[rpb]) < 0.75 * _error(grads16[rpb], grads32[rpb])  # 0.025 vs 0.060 here
