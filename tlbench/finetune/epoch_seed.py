"""EpochSeed: reseed the global RNGs at every epoch start from (seed, epoch, rank), so what draws
from them during training (dropout) does not depend on the epochs run before in this process:
a run resumed at an epoch boundary continues exactly as an uninterrupted one."""

from __future__ import annotations

import random

import numpy as np
import pytorch_lightning as pl
import torch

from tlbench.distributed.samplers import sample_seed


class EpochSeed(pl.Callback):
    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = sample_seed(self.seed, trainer.current_epoch, -2 - trainer.global_rank)  # not an image's seed
        random.seed(value)
        np.random.seed(value % 2**32)
        torch.manual_seed(value)
