"""LR schedules of fine-tuning, the targets of `conf/strategy/lr_schedule/*.yaml`.

Each is built from its config values and called per optimizer step as
`multiplier(step, total_steps, steps_per_epoch)`; FineTuneModule multiplies every group's LR by it
(and by 0 or 1 from the unfreezing schedule). A linear warm-up over `warmup_steps` steps comes first
whatever the schedule. They are frozen dataclasses rather than closures so that the module stays
picklable (DDP's spawn start method pickles it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

LRMultiplier = Callable[[int, int, int], float]  # (step, total_steps, steps_per_epoch) -> LR factor


@dataclass(frozen=True, kw_only=True)
class _Warmup:
    warmup_steps: int = 0

    def __call__(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return self.after_warmup(step, total_steps, steps_per_epoch)

    def after_warmup(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class Cosine(_Warmup):
    """Cosine decay from 1 to 0 over the steps after the warm-up."""

    def after_warmup(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        progress = min(1.0, (step - self.warmup_steps) / max(1, total_steps - self.warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True, kw_only=True)
class Step(_Warmup):
    """x `gamma` every `step_epochs` epochs."""

    gamma: float = 0.1
    step_epochs: int = 10

    def after_warmup(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        return float(self.gamma) ** ((step // steps_per_epoch) // int(self.step_epochs))


@dataclass(frozen=True, kw_only=True)
class Constant(_Warmup):
    """1 after the warm-up."""

    def after_warmup(self, step: int, total_steps: int, steps_per_epoch: int) -> float:
        return 1.0
