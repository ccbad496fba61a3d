"""Shared fixtures: tiny random models for fast tests, the embedded model loaded once per session."""
import os

import pytest
import torch

os.environ.setdefault("LESSONLIB_PROFILE", "ci")
# Under pytest-xdist each worker gets one thread, so two workers share two cores without oversubscribing.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def smollm2():
    from lessonlib.models import load_model
    return load_model(device="cpu")


@pytest.fixture
def tiny_llama():
    from lessonlib.models import tiny_causal_lm
    return tiny_causal_lm("llama", seed=0)
