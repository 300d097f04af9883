"""Shared test settings: keep torch on one thread so tests do not fight over the 2 cores."""

import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the entry-point scripts live at the top level
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
