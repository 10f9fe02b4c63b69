"""Params and FLOPs of every model that has a row in the papers' table match the paper.

Tolerance (project rule): 1% or half the last reported digit, whichever is larger, for params; FLOPs
(the papers' "FLOPs" are MACs, counted here with fvcore + attention handles at the paper's resolution)
within 3% or half the last digit.

The models are built with their parameters on the meta device (zoo.profile.meta_parameters): counting parameters
needs their shapes only, and the MAC count, which depends on shapes only too, runs on zero-filled parameters, so
no variant pays for its weight initialisation (seconds for the large ones). zoo.profile's tests hold both counts
to those of a normally built model.
"""
import pytest
import timm

import zoo
from zoo.profile import count_macs, count_params, materialize_zeros, meta_parameters
from zoo.profile.paper import paper_number, paper_table

ROWS = sorted(n for n in paper_table() if n in zoo.list_models())


def tolerance(reported: float, rel: float) -> float:
    text = repr(reported)
    half_digit = 0.5 * 10 ** -(len(text.split('.')[1]) if '.' in text and not text.endswith('.0') else 0)
    return max(rel * reported, half_digit)


def test_table_names_registered_models():
    unknown = [n for n in paper_table() if n not in zoo.list_models()]
    assert not unknown, f'paper_table.csv names unregistered models: {unknown}'


# The rows whose MAC count (a traced forward at the paper's resolution) costs most, 9-35 CPU-s each: their FLOPs
# run with --runslow. The default run keeps a sibling through the same code at each resolution: MaxViT-T / S / B /
# L at 224, -T / S / B at 384, -T / S at 512 for MaxViT-L-384, -L-512, -B-512 and the XLs; DiNAT-B and DiNAT-L 22k
# (7x7 and 11x11) at 224 and DiNAT-S-L-384 at 384 for DiNAT-L, -L-384 and -L-384-11x11. Their params checks
# stay in the default run.
SLOW_FLOPS = {'zoo_maxvit_xlarge', 'zoo_maxvit_xlarge_384', 'zoo_maxvit_xlarge_512', 'zoo_maxvit_large_512',
              'zoo_maxvit_large_384', 'zoo_maxvit_base_512',
              'zoo_dinat_large', 'zoo_dinat_large_384', 'zoo_dinat_large_384_11x11'}


def build(name):
    """`name` with its parameters on the meta device: shapes without memory or init (see the module docstring)."""
    with meta_parameters():
        return timm.create_model(name)


def test_slow_rows_are_paper_rows():
    assert SLOW_FLOPS <= set(ROWS)


@pytest.mark.parametrize('name', ROWS)
def test_params_match_paper(name):
    paper_params = paper_number(name, 'params_m')
    if paper_params is None:
        pytest.skip(f'{name}: the paper reports no confirmed params')  # ('?' figures; DaViT-G is 1.4B)
    params = count_params(build(name)) / 1e6
    assert abs(params - paper_params) <= tolerance(paper_params, 0.01), (params, paper_params)


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_FLOPS else n for n in ROWS])
def test_flops_match_paper(name):
    paper_gflops = paper_number(name, 'gflops')
    if paper_gflops is None:
        pytest.skip(f'{name}: the paper reports no confirmed FLOPs')
    size = int(paper_table()[name]['img_size'])
    gmacs = count_macs(materialize_zeros(build(name)), size) / 1e9
    assert abs(gmacs - paper_gflops) <= tolerance(paper_gflops, 0.03), (gmacs, paper_gflops)
