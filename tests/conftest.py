"""Shared test settings: keep torch on one thread so tests do not fight over the 2 cores."""

import os

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def hashed(monkeypatch) -> list[int]:
    """One entry per chunk digest computed (``chunk_store.content_digest``) from now on."""
    from ewc_dqn import chunk_store

    calls: list[int] = []
    digest = chunk_store.content_digest

    def counting(part: np.ndarray) -> str:
        calls.append(1)
        return digest(part)

    monkeypatch.setattr(chunk_store, "content_digest", counting)
    return calls
