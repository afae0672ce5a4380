"""The unfreezing schedule: how many of the top block groups train at each epoch.

A pure function of the epoch, so every DDP rank and every resumed run agrees on it.
Presets: `progressive` (head first, then one more group from the top every `every` epochs, or at
explicit `milestones`), `full` (everything from epoch 0), `head_only` (the backbone never trains).
`frozen_forever` bottom groups never unfreeze ("freeze as much as possible"); `lp_epochs` head-only
epochs come first (LP-FT: a linear probe, then fine-tuning from that head).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tlbench.errors import ConfigError

PRESETS = ("progressive", "full", "head_only")


@dataclass(frozen=True)
class UnfreezeSchedule:
    num_groups: int
    preset: str = "progressive"
    every: int = 1
    milestones: list[int] = field(default_factory=list)
    frozen_forever: int = 0
    lp_epochs: int = 0

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"strategy.schedule.preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if not 0 <= self.frozen_forever <= self.num_groups:
            raise ConfigError(
                f"strategy.schedule.frozen_forever={self.frozen_forever}, but the model has {self.num_groups} groups"
            )
        if self.every < 1:
            raise ConfigError(f"strategy.schedule.every must be >= 1, got {self.every}")
        if self.lp_epochs < 0:
            raise ConfigError(f"strategy.schedule.lp_epochs must be >= 0, got {self.lp_epochs}")
        milestones = list(self.milestones)
        if milestones != sorted(set(milestones)) or any(m < 1 for m in milestones):
            raise ConfigError(f"strategy.schedule.milestones must be increasing epochs >= 1, got {milestones}")
        if len(milestones) > self.unfreezable:
            raise ConfigError(
                f"strategy.schedule.milestones names {len(milestones)} unfreezing steps, but the model has only "
                f"{self.unfreezable} groups that may unfreeze ({self.num_groups} groups, "
                f"frozen_forever={self.frozen_forever})"
            )

    @property
    def unfreezable(self) -> int:
        return self.num_groups - self.frozen_forever

    def trainable_groups(self, epoch: int) -> int:
        """How many groups, counted from the top, train during `epoch` (0-based)."""
        if self.preset == "head_only" or epoch < self.lp_epochs:
            return 0
        if self.preset == "full":
            return self.unfreezable
        epoch -= self.lp_epochs
        steps = sum(1 for m in self.milestones if m <= epoch) if self.milestones else epoch // self.every
        return min(steps, self.unfreezable)

    def is_trainable(self, group: int, epoch: int) -> bool:
        """Group `group` (0 = nearest the input) trains during `epoch`."""
        return group >= self.num_groups - self.trainable_groups(epoch)
