"""Classification training on timm's stack, shared by tools/train.py and tools/validate.py.

    data.py        ImageFolder checks, a dataset wrapper that skips (and counts) unreadable images, a resumable
                   distributed batch sampler, loaders built from timm's transforms
    dist.py        torchrun (DDP) setup and the few collectives the loop needs
    checkpoint.py  atomic saves, RNG state capture/restore, reading train/zoo/timm/authors' checkpoints
    engine.py      build model/optimizer/scheduler/EMA from args, train one epoch, evaluate
    config.py      argparse + YAML recipes (`--config` gives defaults, the command line overrides them)
    digits.py      scikit-learn's handwritten digits written out as a small ImageFolder

Errors a user can fix (missing data, empty class folder, unknown model, ...) raise `UsageError`; the tools print
them as one line `error: ...` and exit with status 2.
"""


class UsageError(Exception):
    """Bad input the user can fix; printed as a single line by the tools."""


__all__ = ['UsageError']
