"""Fine-tuning training throughput: tlbench's `strategy=finetune` against a plain PyTorch loop.

Target (issue: fine-tuning): tlbench's training images per second are at least 0.90 of a plain
PyTorch training loop's on the same model, data and batch size, measured in one run.

- tlbench: `FineTuneModule` (9 parameter groups, discriminative LRs, per-step LambdaLR, torchmetrics,
  logging) fitted by a Lightning `Trainer` with the `ProgressiveUnfreezing` callback, preset `full`
  (every group trains from epoch 0), built by `build_finetune_module` as `run_finetune` builds them.
- plain: `for batch in loader: zero_grad; loss = CE(model(x), y); backward; step`.
- Same model (efficientnet_lite0 with its packaged ImageNet weights and a new linear 10-class head;
  the plain loop gets a deep copy), same data (scikit-learn digits, upscaled once to a fixed tensor
  dataset, shuffled with the same seed), same batch size, same optimizer (SGD, momentum 0.9,
  weight decay 1e-4), fp32 on CPU.
- Timing: the time between the end of the last warm-up batch and the end of the last timed batch,
  so data loading and every per-step overhead of each loop are included, start-up is not. The two
  loops alternate for several rounds (after one discarded warm-up round); the figure is the batch
  size over the median batch time of all timed batches (robust to load from other processes).
- Both models are in train mode (BatchNorm statistics updated: with preset full every group trains).

    python benchmarks/finetune_throughput.py [--size 64] [--batch 32] [--warmup 5] [--batches 12] [--rounds 4]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tlbench.finetune.assembly import build_finetune_module
from tlbench.finetune.callback import ProgressiveUnfreezing
from tlbench.finetune.module import FineTuneModule
from tlbench.models import create_backbone

OPTIMIZER = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01, "momentum": 0.9, "weight_decay": 1.0e-4}
STRATEGY = {  # the resolved `strategy` group: a linear head, preset full, cosine without warm-up
    "schedule": {"preset": "full"},
    "optimizer": OPTIMIZER,
    "lr_schedule": {"_target_": "tlbench.finetune.lr_schedules.Cosine", "warmup_steps": 0},
    "lr_decay": 0.5,
}


class DigitTensors(Dataset):
    """Digits as a fixed float tensor (3 x size x size, normalized), items shaped like tlbench's batches."""

    def __init__(self, size: int, mean: tuple, std: tuple) -> None:
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
        self.images = (images - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
        self.labels = torch.tensor(digits.target, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "ok": True}


def loader(dataset: Dataset, batch: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0))


class BatchClock(pl.Callback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ends.append(time.perf_counter())


def intervals(ends: list[float], warmup: int) -> list[float]:
    """Seconds from the end of each batch to the end of the next, warm-up batches excluded."""
    timed = ends[warmup - 1 :]
    return [b - a for a, b in itertools.pairwise(timed)]


def tlbench_round(module: FineTuneModule, data: Dataset, args) -> list[float]:
    # each fit builds a fresh optimizer and schedule (configure_optimizers), as a new run would
    # create_backbone returns the model in eval mode; ProgressiveUnfreezing puts trainable groups in train mode.
    clock = BatchClock()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        max_epochs=1,
        limit_train_batches=args.warmup + args.batches,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        callbacks=[ProgressiveUnfreezing(module.schedule, module.groups), clock],
    )
    trainer.fit(module, train_dataloaders=loader(data, args.batch))
    assert all(module.trainable_groups), "preset full: every group trains"
    assert all(m.training for m in module.modules()), "preset full: everything in train mode"
    return intervals(clock.ends, args.warmup)


def plain_round(model: nn.Module, data: Dataset, args) -> list[float]:
    model.train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=OPTIMIZER["lr"], momentum=OPTIMIZER["momentum"], weight_decay=OPTIMIZER["weight_decay"]
    )
    criterion = nn.CrossEntropyLoss()
    ends = []
    for step, batch in enumerate(loader(data, args.batch)):
        if step == args.warmup + args.batches:
            break
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(batch["image"]), batch["label"])
        loss.backward()
        optimizer.step()
        ends.append(time.perf_counter())
    return intervals(ends, args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--size", type=int, default=64, help="input size (square)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5, help="batches excluded from timing, each round")
    parser.add_argument("--batches", type=int, default=12, help="timed batches, each round")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds (after one warm-up round)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    pl.seed_everything(0, verbose=False)

    backbone = create_backbone(name="efficientnet_lite0", source="efficientnet_lite0_package")
    module = build_finetune_module(backbone, 10, STRATEGY)  # new head, groups, schedule, module
    plain_model = copy.deepcopy(backbone.model)
    data = DigitTensors(args.size, backbone.data_config["mean"], backbone.data_config["std"])

    tl, plain = [], []  # images/s per round (whole timed span)
    tl_steps, plain_steps = [], []  # every timed batch interval, all rounds
    for r in range(args.rounds + 1):  # round 0 warms up the process (allocator, oneDNN kernels) and is discarded
        a = tlbench_round(module, data, args)
        b = plain_round(plain_model, data, args)
        a_ips, b_ips = len(a) * args.batch / sum(a), len(b) * args.batch / sum(b)
        note = " (warm-up, discarded)" if r == 0 else ""
        print(f"round {r}{note}: tlbench {a_ips:.1f} img/s, plain {b_ips:.1f} img/s", flush=True)
        if r > 0:
            tl.append(a_ips)
            plain.append(b_ips)
            tl_steps += a
            plain_steps += b
    # The headline: batch size over the median batch time (robust to bursts of load from other processes).
    tl_med = args.batch / statistics.median(tl_steps)
    plain_med = args.batch / statistics.median(plain_steps)
    ratio = tl_med / plain_med

    print(f"\n{'loop':<10}{'img/s':>10}{'per round (img/s)':>40}")
    print(f"{'tlbench':<10}{tl_med:>10.1f}{', '.join(f'{x:.1f}' for x in tl):>40}")
    print(f"{'plain':<10}{plain_med:>10.1f}{', '.join(f'{x:.1f}' for x in plain):>40}")
    print(f"{'ratio':<10}{ratio:>10.3f}{'target >= 0.90':>40}")
    report = {
        "benchmark": "finetune_throughput",
        "model": "efficientnet_lite0 (packaged ImageNet weights) + linear head, 10 classes",
        "input_size": [3, args.size, args.size],
        "batch_size": args.batch,
        "warmup_batches": args.warmup,
        "timed_batches": args.batches,
        "rounds": args.rounds,
        "tlbench_images_per_s": [round(x, 2) for x in tl],
        "plain_images_per_s": [round(x, 2) for x in plain],
        "tlbench_images_per_s_median_batch": round(tl_med, 2),
        "plain_images_per_s_median_batch": round(plain_med, 2),
        "ratio_of_round_medians": round(statistics.median(tl) / statistics.median(plain), 3),
        "ratio_tlbench_over_plain": round(ratio, 3),
        "target_ratio": 0.90,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "host": platform.node(),
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "finetune_throughput.json").write_text(json.dumps(report, indent=2))
    sys.exit(0 if ratio >= 0.90 else 1)


if __name__ == "__main__":
    main()
