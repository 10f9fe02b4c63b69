"""Params and FLOPs of every model that has a row in the papers' table match the paper.

Tolerance (project rule): 1% or half the last reported digit, whichever is larger, for params; FLOPs
(the papers' "FLOPs" are MACs, counted here with fvcore + attention handles at the paper's resolution)
within 3% or half the last digit.
"""
import pytest
import timm

import zoo
from zoo.profile import count_macs, count_params
from zoo.profile.paper import paper_number, paper_table

ROWS = sorted(n for n in paper_table() if n in zoo.list_models())


def tolerance(reported: float, rel: float) -> float:
    text = repr(reported)
    half_digit = 0.5 * 10 ** -(len(text.split('.')[1]) if '.' in text and not text.endswith('.0') else 0)
    return max(rel * reported, half_digit)


def test_table_names_registered_models():
    unknown = [n for n in paper_table() if n not in zoo.list_models()]
    assert not unknown, f'paper_table.csv names unregistered models: {unknown}'


@pytest.mark.parametrize('name', ROWS)
def test_params_and_flops_match_paper(name):
    paper_params, paper_gflops = paper_number(name, 'params_m'), paper_number(name, 'gflops')
    if paper_params is None and paper_gflops is None:
        pytest.skip(f'{name}: the paper reports no confirmed params or FLOPs')  # ('?' figures; DaViT-G is 1.4B)
    model = timm.create_model(name)
    params = count_params(model) / 1e6
    if paper_params is not None:
        assert abs(params - paper_params) <= tolerance(paper_params, 0.01), (params, paper_params)
    if paper_gflops is not None:
        size = int(paper_table()[name]['img_size'])
        gmacs = count_macs(model, size) / 1e9
        assert abs(gmacs - paper_gflops) <= tolerance(paper_gflops, 0.03), (gmacs, paper_gflops)
