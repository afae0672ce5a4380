"""Fine-tuning on CPU with random weights and tiny in-memory data: which parameters get gradients
and which learning rates each parameter group has per epoch, BatchNorm statistics of frozen groups,
resume mid-schedule, and checkpoints of another model refused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, Dataset

from tlbench.errors import WeightsError
from tlbench.finetune.assembly import build_finetune_module
from tlbench.finetune.callback import ProgressiveUnfreezing
from tlbench.finetune.curve import EpochCurve
from tlbench.finetune.module import FineTuneModule
from tlbench.finetune.pipeline import check_checkpoint
from tlbench.models import create_backbone

LR = 0.1
DECAY = 0.5
NUM_CLASSES = 3
SGD = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": LR, "momentum": 0.9, "weight_decay": 1e-4}
CONSTANT = {"_target_": "tlbench.finetune.lr_schedules.Constant"}
COSINE_WARMUP_2 = {"_target_": "tlbench.finetune.lr_schedules.Cosine", "warmup_steps": 2}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is as fast alone and far faster on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyImages(Dataset):
    """Deterministic 32x32 random images with labels, in the datamodule's batch format."""

    def __init__(self, n: int = 32, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 3, 32, 32, generator=g)
        self.labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "ok": True}


def loader() -> DataLoader:
    return DataLoader(TinyImages(), batch_size=8, shuffle=False, num_workers=0)


def make_module(
    name: str = "resnet18", lr_schedule: dict | None = None, num_classes: int = NUM_CLASSES, **schedule
) -> tuple[FineTuneModule, ProgressiveUnfreezing]:
    backbone = create_backbone(name, source="timm", pretrained=False)
    strategy = {"schedule": schedule, "optimizer": SGD, "lr_schedule": lr_schedule or CONSTANT, "lr_decay": DECAY}
    module = build_finetune_module(backbone, num_classes, strategy)
    return module, ProgressiveUnfreezing(module.schedule, module.groups)


class Recorder(pl.Callback):
    """Per epoch, at the first optimizer step: parameters with gradients, requires_grad, LRs per group."""

    def __init__(self) -> None:
        self.epochs: dict[int, dict] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        epoch = trainer.current_epoch
        if epoch in self.epochs:
            return
        named = list(pl_module.backbone.named_parameters())
        self.epochs[epoch] = {
            "grad": {n for n, p in named if p.grad is not None},
            "requires_grad": {n for n, p in named if p.requires_grad},
            "lrs": {g["name"]: float(g["lr"]) for g in optimizer.param_groups},
            "trainable_groups": list(pl_module.trainable_groups),
        }


def fit(module, callbacks, epochs, batches=2, ckpt_path=None, val=False, **kwargs) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        limit_train_batches=batches,
        logger=False,
        enable_checkpointing=kwargs.pop("enable_checkpointing", False),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        callbacks=callbacks,
        **kwargs,
    )
    trainer.fit(module, train_dataloaders=loader(), val_dataloaders=loader() if val else None, ckpt_path=ckpt_path)
    return trainer


def expected_lrs(module: FineTuneModule, trainable: list[bool], factor: float = 1.0) -> dict[str, float]:
    n = len(module.groups)
    lrs = {"head": LR * factor}
    for index in range(n):
        depth = n - 1 - index  # 0 for the top group
        lrs[f"group{index}"] = LR * DECAY ** (depth + 1) * factor if trainable[index] else 0.0
    return lrs


@pytest.mark.parametrize(
    ("schedule", "epochs", "expected"),
    [
        # resnet18: 5 groups (stem, layer1..layer4); one more from the top every epoch
        ({"preset": "progressive", "every": 1}, 3, [0, 1, 2]),
        ({"preset": "progressive", "milestones": [2]}, 3, [0, 0, 1]),
        ({"preset": "full"}, 2, [5, 5]),
        ({"preset": "head_only"}, 2, [0, 0]),
        ({"preset": "full", "lp_epochs": 1, "frozen_forever": 2}, 2, [0, 3]),
    ],
    ids=["progressive", "milestones", "full", "head_only", "lp_ft_frozen2"],
)
def test_gradients_and_learning_rates_per_epoch(schedule, epochs, expected):
    pl.seed_everything(0)
    module, unfreezing = make_module(**schedule)
    groups = module.groups
    head = {n for n, _ in module.backbone.named_parameters() if n.startswith(module.head_name + ".")}
    before = {n: p.detach().clone() for n, p in module.backbone.named_parameters()}
    recorder = Recorder()
    fit(module, [unfreezing, recorder], epochs)
    assert sorted(recorder.epochs) == list(range(epochs))
    for epoch, count in enumerate(expected):
        trainable = [i >= len(groups) - count for i in range(len(groups))]
        record = recorder.epochs[epoch]
        should_train = head | {n for g, on in zip(groups, trainable) if on for n in g}
        assert record["trainable_groups"] == trainable, epoch
        assert record["grad"] == should_train, epoch
        assert record["requires_grad"] == should_train, epoch
        assert record["lrs"] == pytest.approx(expected_lrs(module, trainable)), epoch
    # groups that never trained are bit-identical (no weight decay or momentum on frozen parameters)
    never = {n for g, i in zip(groups, range(len(groups))) if i < len(groups) - max(expected) for n in g}
    for name, p in module.backbone.named_parameters():
        if name in never:
            assert torch.equal(p, before[name]), name
        elif name in head:
            assert not torch.equal(p, before[name]), name


def test_efficientnet_progressive_gradients():
    pl.seed_everything(0)
    module, unfreezing = make_module("efficientnet_lite0", every=1)
    assert len(module.groups) == 8
    recorder = Recorder()
    fit(module, [unfreezing, recorder], epochs=2, batches=1)
    assert not any(recorder.epochs[0]["trainable_groups"])
    assert recorder.epochs[1]["trainable_groups"] == [False] * 7 + [True]
    top = set(module.groups[-1])
    assert {n for n in recorder.epochs[1]["grad"] if not n.startswith("classifier.")} == top
    assert recorder.epochs[1]["lrs"] == pytest.approx(expected_lrs(module, [False] * 7 + [True]))


def test_learning_rates_follow_warmup_and_cosine_times_the_gate():
    pl.seed_everything(0)
    module, unfreezing = make_module(lr_schedule=COSINE_WARMUP_2, every=1)
    recorder = Recorder()
    fit(module, [unfreezing, recorder], epochs=3, batches=2)  # 6 steps; first steps of epochs: 0, 2, 4

    factors = [0.5, 0.5 * (1 + math.cos(math.pi * 0 / 4)), 0.5 * (1 + math.cos(math.pi * 2 / 4))]
    for epoch, factor in enumerate(factors):
        trainable = [i >= 5 - epoch for i in range(5)]
        assert recorder.epochs[epoch]["lrs"] == pytest.approx(expected_lrs(module, trainable, factor)), epoch


def _bn_stats(module: FineTuneModule) -> dict[str, torch.Tensor]:
    return {
        n: b.detach().clone()
        for n, b in module.backbone.named_buffers()
        if n.endswith(("running_mean", "running_var", "num_batches_tracked"))
    }


class BNSnapshots(pl.Callback):
    def __init__(self) -> None:
        self.at_epoch_end: list[dict[str, torch.Tensor]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.at_epoch_end.append(_bn_stats(pl_module))


def _group_of(module: FineTuneModule, buffer: str) -> int:
    prefix = buffer.rsplit(".", 1)[0] + "."
    return next(i for i, g in enumerate(module.groups) if any(n.startswith(prefix) for n in g))


def test_batchnorm_statistics_of_frozen_groups_are_untouched():
    pl.seed_everything(0)
    module, unfreezing = make_module(every=1)  # epoch 0: head only; epoch 1: layer4 (group 4) trains
    start = _bn_stats(module)
    snapshots = BNSnapshots()
    # with a validation run after each epoch: Lightning's eval/train mode switching must not undo the freezing
    fit(module, [unfreezing, snapshots], epochs=2, batches=2, val=True)
    after0, after1 = snapshots.at_epoch_end
    by_group: dict[int, list[str]] = {}
    for name in start:
        by_group.setdefault(_group_of(module, name), []).append(name)
    assert sorted(by_group) == [0, 1, 2, 3, 4]
    for name in start:  # epoch 0: every group frozen, no statistic moves
        assert torch.equal(after0[name], start[name]), name
    for group in range(4):  # epoch 1: groups 0..3 still frozen
        for name in by_group[group]:
            assert torch.equal(after1[name], start[name]), name
    # epoch 1: layer4 trains, so its BatchNorm layers are in train mode and their statistics move
    for name in by_group[4]:
        assert not torch.equal(after1[name], start[name]), name


def test_batchnorm_statistics_of_trainable_groups_move():
    pl.seed_everything(0)
    module, unfreezing = make_module(preset="full", frozen_forever=2)
    start = _bn_stats(module)
    fit(module, [unfreezing], epochs=1, batches=2)
    end = _bn_stats(module)
    for name in start:
        moved = not torch.equal(end[name], start[name])
        assert moved == (_group_of(module, name) >= 2), name


class StopAfter(pl.Callback):
    """Simulates an interruption: stop (after checkpointing) at the end of epoch `epochs - 1`."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def test_resume_mid_schedule_equals_uninterrupted(tmp_path: Path):
    lr_schedule = COSINE_WARMUP_2
    epochs = 4

    pl.seed_everything(0)
    straight, unfreezing = make_module(lr_schedule=lr_schedule, every=1)
    straight_rec, straight_curve = Recorder(), EpochCurve()
    fit(straight, [unfreezing, straight_rec, straight_curve], epochs)

    pl.seed_everything(0)
    first, unfreezing = make_module(lr_schedule=lr_schedule, every=1)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    fit(first, [unfreezing, checkpoint, StopAfter(2), EpochCurve()], epochs, enable_checkpointing=True)
    last = tmp_path / "last.ckpt"
    assert last.is_file()
    assert torch.load(last, map_location="cpu", weights_only=False)["epoch"] == 1

    pl.seed_everything(1)  # a fresh process: other random initial weights, replaced by the checkpoint
    resumed, unfreezing = make_module(lr_schedule=lr_schedule, every=1)
    check_checkpoint(resumed, str(last))  # the pipeline's pre-flight check accepts its own checkpoint
    resumed_rec, resumed_curve = Recorder(), EpochCurve()
    trainer = fit(
        resumed,
        [unfreezing, resumed_rec, resumed_curve, ModelCheckpoint(dirpath=tmp_path / "2", save_last=True)],
        epochs,
        enable_checkpointing=True,
        ckpt_path=str(last),
    )
    assert trainer.current_epoch == epochs
    assert sorted(resumed_rec.epochs) == [2, 3]
    for epoch in (2, 3):
        a, b = straight_rec.epochs[epoch], resumed_rec.epochs[epoch]
        assert a["trainable_groups"] == b["trainable_groups"] == [i >= 5 - epoch for i in range(5)]
        assert a["grad"] == b["grad"]
        assert a["lrs"] == pytest.approx(b["lrs"], rel=1e-12, abs=0)
    # the curve is carried in the checkpoint: the resumed run reports all epochs
    assert [r["epoch"] for r in resumed_curve.rows] == [0, 1, 2, 3]
    assert [r["trainable_groups"] for r in resumed_curve.rows] == [r["trainable_groups"] for r in straight_curve.rows]
    for a, b in zip(straight_curve.rows, resumed_curve.rows):
        assert a["learning_rates"] == pytest.approx(b["learning_rates"], rel=1e-12, abs=0)
    # the same final state: weights, BatchNorm statistics, LRs and requires_grad
    final_a, final_b = straight.state_dict(), resumed.state_dict()
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        # bit-identical on CPU: same data order, same kernels, exact checkpoint round trip
        assert torch.equal(final_a[key], final_b[key]), key
    assert straight.learning_rates() == pytest.approx(resumed.learning_rates(), rel=1e-12, abs=0)
    assert [p.requires_grad for p in straight.parameters()] == [p.requires_grad for p in resumed.parameters()]


def test_checkpoint_of_another_model_or_head_is_refused(tmp_path: Path):
    pl.seed_everything(0)
    module, unfreezing = make_module(every=1)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    fit(module, [unfreezing, checkpoint], epochs=1, batches=1, enable_checkpointing=True)
    last = str(tmp_path / "last.ckpt")

    check_checkpoint(make_module(every=1)[0], last)  # same model and head: accepted

    other_head, _ = make_module(every=1, num_classes=NUM_CLASSES + 2)
    with pytest.raises(WeightsError, match=r"is not of this model/head: 0 missing keys.*shape mismatches \['backbone"):
        check_checkpoint(other_head, last)

    other_model, _ = make_module("efficientnet_lite0", every=1)
    with pytest.raises(WeightsError, match=r"is not of this model/head: [1-9]\d* missing keys.*[1-9]\d* unexpected"):
        check_checkpoint(other_model, last)

    with pytest.raises(WeightsError, match=r"trainer\.ckpt_path=.*does not exist"):
        check_checkpoint(module, str(tmp_path / "missing.ckpt"))
