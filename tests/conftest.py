"""Shared test settings: deterministic torch, a bounded hypothesis profile."""

import os

import torch
from hypothesis import HealthCheck, settings

torch.use_deterministic_algorithms(True)
settings.register_profile(
    "symtele",
    max_examples=int(os.environ.get("SYMTELE_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
settings.load_profile("symtele")
