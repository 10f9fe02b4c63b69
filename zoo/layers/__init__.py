"""Shared building blocks, one home for each."""
from .attention import *  # noqa: F401,F403
from .patch import PatchEmbed, PatchMerging
from .mlp import Mlp
