"""The minibatch type shared by the replay buffer, the DQN loss and the Fisher estimators."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Transition(NamedTuple):
    """A minibatch of transitions, tensors on one device.

    obs:      (B, C, H, W) uint8, the stacked observation s_t (C = stack * channels per frame)
    action:   (B,) int64, a_t
    reward:   (B,) float32, r_t as used for learning (already clipped where the config says so)
    discount: (B,) float32, gamma where s_t+1 is bootstrapped, 0 where the episode terminated
              (a time-limit truncation keeps gamma: it is not a terminal state)
    next_obs: (B, C, H, W) uint8, s_t+1
    """

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    discount: torch.Tensor
    next_obs: torch.Tensor

    def to(self, device: torch.device | str) -> Transition:
        """The same batch on ``device``. Host batches bound for CUDA go through pinned memory
        (torch's caching host allocator), so the copies are asynchronous: the host samples the
        next minibatch while the device works."""
        device = torch.device(device)
        if device.type != "cuda":
            return Transition(*(t.to(device) for t in self))
        return Transition(*(_pinned(t).to(device, non_blocking=True) for t in self))


def _pinned(t: torch.Tensor) -> torch.Tensor:
    """``t`` in page-locked host memory (itself when it is already there or on a device)."""
    if t.device.type != "cpu" or t.is_pinned():
        return t
    return t.pin_memory()
