import functools

import pytest
import torch

import zoo  # noqa: F401  (registers the models)

torch.set_num_threads(max(1, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    """`slow` tests run only with --runslow (CI runs them when it has time)."""
    if config.getoption('--runslow'):
        return
    skip = pytest.mark.skip(reason='slow: run with --runslow')
    for item in items:
        if 'slow' in item.keywords:
            item.add_marker(skip)


def pytest_addoption(parser):
    parser.addoption('--runslow', action='store_true', help='also run tests marked slow')


@functools.lru_cache(maxsize=2)
def cached_model(name: str):
    """One eval-mode instance per model name, seeded, shared by the contract tests (building is the slow part)."""
    import timm
    torch.manual_seed(0)
    return timm.create_model(name).eval()
