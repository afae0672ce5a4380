"""The unfreezing callback under DDP: two CPU processes (gloo, spawned) follow the same schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy
from torch.utils.data import DataLoader, Dataset

from tlbench.finetune.assembly import build_finetune_module
from tlbench.finetune.callback import ProgressiveUnfreezing
from tlbench.finetune.module import FineTuneModule
from tlbench.models import create_backbone

LR = 0.1
DECAY = 0.5
EPOCHS = 3


class TinyImages(Dataset):
    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 32, 32, generator=g)
        self.labels = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "ok": True}


class RankRecorder(pl.Callback):
    """Each rank writes, per epoch, the trainable groups, the parameters with gradients, the LRs
    (at the first optimizer step), and at the end a checksum of every parameter."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.rows: dict[int, dict] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if trainer.current_epoch in self.rows:
            return
        named = list(pl_module.backbone.named_parameters())
        self.rows[trainer.current_epoch] = {
            "epoch": trainer.current_epoch,
            "trainable_groups": [i for i, on in enumerate(pl_module.trainable_groups) if on],
            "requires_grad": sorted(n for n, p in named if p.requires_grad),
            "grad": sorted(n for n, p in named if p.grad is not None),
            "lrs": {g["name"]: float(g["lr"]) for g in optimizer.param_groups},
        }

    def on_train_end(self, trainer, pl_module) -> None:
        record = {
            "world_size": trainer.world_size,
            "rows": [self.rows[e] for e in sorted(self.rows)],
            "checksums": {n: float(p.detach().double().sum()) for n, p in pl_module.named_parameters()},
        }
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


def make_module() -> tuple[FineTuneModule, ProgressiveUnfreezing]:
    backbone = create_backbone("resnet18", source="timm", pretrained=False)
    strategy = {
        "schedule": {"preset": "progressive", "every": 1},
        "optimizer": {
            "_target_": "torch.optim.SGD",
            "_partial_": True,
            "lr": LR,
            "momentum": 0.9,
            "weight_decay": 1e-4,
        },
        "lr_schedule": {"_target_": "tlbench.finetune.lr_schedules.Constant"},
        "lr_decay": DECAY,
    }
    module = build_finetune_module(backbone, 3, strategy)
    return module, ProgressiveUnfreezing(module.schedule, module.groups)


@pytest.mark.slow
def test_ddp_ranks_follow_the_same_schedule(tmp_path: Path):
    pl.seed_everything(0)
    module, unfreezing = make_module()
    groups = module.groups
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=DDPStrategy(start_method="spawn", find_unused_parameters=True, process_group_backend="gloo"),
        max_epochs=EPOCHS,
        limit_train_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[unfreezing, RankRecorder(tmp_path)],
    )
    trainer.fit(module, train_dataloaders=DataLoader(TinyImages(), batch_size=8, shuffle=False))

    rank0 = json.loads((tmp_path / "rank0.json").read_text())
    rank1 = json.loads((tmp_path / "rank1.json").read_text())
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["rows"] == rank1["rows"]
    # DDP kept the replicas identical (frozen groups untouched, trainable ones averaged)
    assert rank0["checksums"].keys() == rank1["checksums"].keys()
    for name, value in rank0["checksums"].items():
        assert value == pytest.approx(rank1["checksums"][name], rel=1e-6, abs=1e-6), name

    head = sorted(n for n, _ in module.backbone.named_parameters() if n.startswith(module.head_name + "."))
    n = len(groups)
    assert [r["epoch"] for r in rank0["rows"]] == list(range(EPOCHS))
    for epoch, row in enumerate(rank0["rows"]):
        on = [i >= n - epoch for i in range(n)]
        assert row["trainable_groups"] == [i for i in range(n) if on[i]]
        expected = sorted(head + [p for g, t in zip(groups, on) if t for p in g])
        assert row["requires_grad"] == expected
        assert row["grad"] == expected
        lrs = {"head": LR, **{f"group{i}": LR * DECAY ** (n - i) if on[i] else 0.0 for i in range(n)}}
        assert row["lrs"] == pytest.approx(lrs)
