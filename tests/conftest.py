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


@pytest.fixture
def flex_backward_on_cpu(monkeypatch):
    """torch refuses flex_attention's backward on CPU, but its autograd (the dense math backward) is
    device-agnostic: lift that one device check so tests can hold flex's gradients to a reference on CPU."""
    import torch.nn.attention.flex_attention as flex
    # raising=False: a torch without this check (CPU backward supported) needs no lifting
    monkeypatch.setattr(flex, '_validate_device', lambda *tensors: None, raising=False)
