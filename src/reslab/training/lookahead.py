"""`train.lookahead` (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back";
airbench uses it): the optimizer moves the fast weights; every `k` optimizer steps the slow
weights move `alpha` of the way towards them, and the fast weights restart from the slow:

    slow += alpha * (fast - slow);  fast = slow

Called by the step loop right after each optimizer step (no optimizer wrapper: the LR
schedulers and the GradScaler keep seeing torch's own optimizer). It acts on the model's
parameters only (not the BatchNorm buffers) and leaves the optimizer's state (momentum)
alone, as the paper does. One per phase, like the optimizer: a phase starts its slow weights
from the weights it starts from; checkpointed in last.pt beside the optimizer.
Evaluation sees the fast weights (equal to the slow ones right after every k-th step).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..config import LookaheadConfig


class Lookahead:
    def __init__(self, params: Iterable[nn.Parameter], cfg: LookaheadConfig):
        self.k, self.alpha = cfg.k, cfg.alpha
        self.fast = list(params)
        self.slow = [p.detach().clone() for p in self.fast]
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        if self.steps % self.k:
            return
        fast = [p.detach() for p in self.fast]
        torch._foreach_lerp_(self.slow, fast, self.alpha)  # slow += alpha * (fast - slow)
        torch._foreach_copy_(fast, self.slow)

    def state_dict(self) -> dict:
        return {"steps": self.steps, "slow": [t.clone() for t in self.slow]}

    def load_state_dict(self, state: dict) -> None:
        self.steps = state["steps"]
        with torch.no_grad():
            for mine, saved in zip(self.slow, state["slow"], strict=True):
                mine.copy_(saved)
