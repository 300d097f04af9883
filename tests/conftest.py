"""Shared test settings: keep torch on one thread so tests do not fight over the 2 cores."""

import os

import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
