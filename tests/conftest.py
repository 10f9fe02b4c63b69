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


@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches reset before and after the test, so its compiles neither reuse nor leave graphs."""
    torch._dynamo.reset()
    try:
        yield
    finally:
        torch._dynamo.reset()


@pytest.fixture
def captured_graphs(fresh_dynamo):
    """A torch.compile backend that runs each graph dynamo captures as is and records it: yields (backend, graphs),
    graphs a list of (GraphModule, example inputs)."""
    graphs = []

    def record(gm, example_inputs):
        graphs.append((gm, example_inputs))
        return gm.forward

    yield record, graphs


@pytest.fixture
def dense_timings(monkeypatch):
    """The dense op's per-machine backend timings (zoo.layers.attention.dense._dense_timings) replaced by a given
    table, so that which backend a call takes does not depend on the CPU the tests run on. Returns a setter:
    dense_timings(inference={keys: {backend: seconds}}, training={...}); default a Zen 3's ranking (native for
    inference up to 196 keys, then SDPA; GEMMs for training up to 144 keys)."""
    from zoo.layers.attention import dense

    def set_table(inference=None, training=None):
        zen3_inference = {k: {'native': 1., 'bmm': 2., 'sdpa': 3.} if k <= 196 else {'native': 3., 'bmm': 2., 'sdpa': 1.}
                          for k in dense._CALIBRATED_KEYS}
        zen3_training = {k: {'bmm': 1., 'sdpa': 2.} if k <= 144 else {'bmm': 2., 'sdpa': 1.}
                         for k in dense._CALIBRATED_KEYS}
        table = {mode: {str(k): v for k, v in (given or default).items()}
                 for mode, given, default in (('inference', inference, zen3_inference),
                                              ('training', training, zen3_training))}
        monkeypatch.setattr(dense, '_dense_timings', lambda: table)

    set_table()
    return set_table


@pytest.fixture(autouse=True)
def heap_requests(monkeypatch):
    """The training tool tells glibc's heap to keep freed memory on CPU (zoo.train.heap); run in-process by a test
    it would change the heap of the whole test session. Recorded instead: the list of requests."""
    from zoo.train import engine
    requests = []
    monkeypatch.setattr(engine, 'keep_freed_memory', lambda: requests.append('keep') or True)
    return requests
