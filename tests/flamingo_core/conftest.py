"""Fixtures for the flamingo_core tests (helpers live in fc_helpers.py)."""

import sys
from pathlib import Path

import pytest
import torch

# the test modules import fc_helpers by name; keep that working under --import-mode=importlib too
sys.path.insert(0, str(Path(__file__).parent))

from fc_helpers import make_model, set_gates  # noqa: E402


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return make_model()


@pytest.fixture
def gated_model():
    """The tiny model with open gates, so images change the output."""
    model = make_model()
    set_gates(model, 1.0)
    return model
