"""Fixtures for the flamingo_core tests (helpers live in fc_helpers.py)."""

import pytest
import torch
from fc_helpers import make_model, set_gates


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
