"""`tlbench strategy=finetune` end to end through the real CLI: learning on digits, the results.json
record and its curve, checkpoints, resuming with trainer.ckpt_path, evaluation without val, and bad
input stopped before training (exit code 2, one `tlbench: error:` line)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import read_json, run_cli

pytestmark = pytest.mark.slow

# Small and fast: 30 training images per class at 64x64 in batches of 16, a 20 % validation holdout;
# the head alone for two epochs, then the top group (lr * 0.1) from epoch 2.
FAST = (
    "strategy=finetune",
    "dataset.val_fraction=0.2",
    "dataset.train_per_class=30",
    "dataset.batch_size=16",
    "model.data_config.input_size=[3,64,64]",
    "strategy.schedule.milestones=[2]",
    "strategy.lr_decay=0.1",
    "trainer.enable_progress_bar=false",
)


def csv_val_top1(run_dir: Path) -> dict[int, float]:
    """val/top1 per epoch from the CSV logger (every epoch, whatever checkpoint was restored later)."""
    rows = csv.DictReader((run_dir / "csv" / "metrics.csv").open())
    return {int(r["epoch"]): float(r["val/top1"]) for r in rows if r.get("val/top1")}


def _run(tmp_path: Path, name: str, *overrides: str, check: bool = True):
    run_dir = tmp_path / name
    keys = {o.split("=", 1)[0] for o in overrides}
    base = [o for o in FAST if o.split("=", 1)[0] not in keys]
    proc = run_cli(tmp_path, *base, *overrides, f"hydra.run.dir={run_dir}", check=check)
    return proc, run_dir


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("finetune3")
    _, run_dir = _run(tmp, "run", "strategy.epochs=3")
    return run_dir, read_json(run_dir / "results.json")


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("finetune2")
    _, run_dir = _run(tmp, "run", "strategy.epochs=2")
    return run_dir, read_json(run_dir / "results.json")


def test_finetune_learns_and_records_the_curve(three_epochs):
    run_dir, result = three_epochs
    assert result["strategy"] == "finetune"
    assert result["split_sizes"]["train"] == 300 and result["num_classes"] == 10
    assert set(result["metrics"]) == {"val", "test"}
    for split in ("val", "test"):
        assert set(result["metrics"][split]) == {"top1", "mean_per_class"}
        assert 0.0 <= result["metrics"][split]["top1"] <= 1.0

    classifier = result["classifier"]
    assert classifier["type"] == "finetune"
    assert classifier["evaluated_checkpoint"] == "best"
    assert classifier["epochs"] == 3 and classifier["schedule"]["preset"] == "progressive"
    groups = classifier["groups"]
    assert groups >= 3
    assert Path(classifier["checkpoint_dir"]) == run_dir / "checkpoints"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()

    curve = result["curve"]
    # progressive with milestones=[2]: the head alone for epochs 0 and 1, then the top group too.
    # (The curve should have every epoch; until the EpochCurve restore bug is fixed it may stop at the
    # best epoch, see test_curve_has_every_epoch_when_the_best_epoch_is_not_the_last.)
    expected = [[], [], [groups - 1]]
    assert [row["epoch"] for row in curve] == list(range(len(curve))) and 1 <= len(curve) <= 3
    assert [row["trainable_groups"] for row in curve] == expected[: len(curve)]
    assert curve[0]["learning_rates"]["head"] > 0
    assert all(curve[0]["learning_rates"][f"group{g}"] == 0 for g in range(groups))
    for row in curve:
        assert {"train/loss", "val/top1", "val/mean_per_class"} <= set(row)
    # it learns: the last epoch beats its own epoch 0 on val (the CSV log has every epoch)
    val = csv_val_top1(run_dir)
    assert sorted(val) == [0, 1, 2]
    assert val[2] > val[0], val
    assert curve[-1]["val/top1"] > curve[0]["val/top1"], curve
    # the tested checkpoint is the best on val
    assert result["metrics"]["val"]["top1"] == pytest.approx(max(val.values()), abs=1e-6)


def test_resume_from_last_checkpoint_continues_the_schedule(tmp_path, two_epochs):
    first_dir, first = two_epochs
    assert len(first["curve"]) == 2
    last = first_dir / "checkpoints" / "last.ckpt"
    _, run_dir = _run(tmp_path, "resumed", "strategy.epochs=3", f"trainer.ckpt_path={last}")
    resumed = read_json(run_dir / "results.json")
    curve = resumed["curve"]
    assert [row["epoch"] for row in curve] == [0, 1, 2]
    assert curve[:2] == first["curve"]
    groups = resumed["classifier"]["groups"]
    assert curve[2]["trainable_groups"] == [groups - 1]  # milestone 2 reached after the resume
    assert resumed["config"]["trainer"]["ckpt_path"] == str(last)
    # the top group trained in epoch 2 with its BatchNorm in train mode (the backbone comes from
    # create_backbone in eval mode and Lightning keeps modes); the stem never trained
    import torch

    from tlbench.models import create_backbone

    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 2
    state = ckpt["state_dict"]
    pretrained = create_backbone(name="efficientnet_lite0", source="efficientnet_lite0_package").model.state_dict()
    assert torch.equal(state["backbone.bn1.running_mean"], pretrained["bn1.running_mean"])
    assert not torch.equal(state["backbone.bn2.running_mean"], pretrained["bn2.running_mean"])
    assert not torch.equal(state["backbone.conv_head.weight"], pretrained["conv_head.weight"])


def test_without_val_the_last_epoch_is_evaluated(tmp_path):
    _, run_dir = _run(tmp_path, "run", "dataset.val_fraction=0.0", "strategy.epochs=1")
    result = read_json(run_dir / "results.json")
    assert set(result["metrics"]) == {"test"}
    assert result["classifier"]["evaluated_checkpoint"].startswith("last epoch")
    assert len(result["curve"]) == 1 and "val/top1" not in result["curve"][0]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def _assert_clean_error(proc, run_dir: Path, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "tlbench: error:" in proc.stderr
    assert "Traceback" not in proc.stderr
    line = next(x for x in proc.stderr.splitlines() if x.startswith("tlbench: error:"))
    for needle in needles:
        assert needle in line, line
    # stopped before training: nothing fitted, nothing checkpointed
    assert not (run_dir / "results.json").exists()
    assert not list(run_dir.glob("checkpoints/*.ckpt"))


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["strategy.schedule.milestones=[3,1]"], ["strategy.schedule.milestones", "[3, 1]"]),
        (["strategy.schedule.milestones=[2,2]"], ["strategy.schedule.milestones"]),
        (["strategy.schedule.frozen_forever=99"], ["strategy.schedule.frozen_forever=99", "groups"]),
        (["strategy.schedule.milestones=[1,2,3,4,5,6,7,8,9,10,11,12]"], ["milestones", "groups"]),
        (["strategy.schedule.preset=gradual"], ["strategy.schedule.preset"]),
        (["trainer.ckpt_path=/nonexistent/last.ckpt"], ["/nonexistent/last.ckpt", "does not exist"]),
    ],
    ids=["milestones-order", "milestones-repeated", "frozen-forever", "too-many-milestones", "preset", "no-ckpt"],
)
def test_bad_schedule_is_a_clear_error_before_training(tmp_path, overrides, needles):
    proc, run_dir = _run(tmp_path, "run", "strategy.epochs=1", *overrides, check=False)
    _assert_clean_error(proc, run_dir, *needles)


@pytest.mark.parametrize(
    "overrides, needles",
    [
        (["strategy.epochs=0"], ["strategy.epochs must be >= 1", "got 0"]),
        (["strategy.epochs=1", "dataset.train_per_class=0"], ["dataset.train_per_class must be >= 1", "got 0"]),
    ],
    ids=["zero-epochs", "zero-shots"],
)
def test_zero_epochs_or_shots_is_a_clear_error(tmp_path, overrides, needles):
    """Both used to exit 0: an untrained head's accuracy, or every training image with 0 recorded."""
    proc, run_dir = _run(tmp_path, "run", *overrides, check=False)
    _assert_clean_error(proc, run_dir, *needles)
    assert not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=timm", "model.name=resnet18", "model.pretrained=false"],  # another model
        ["strategy.head.kind=mlp"],  # same backbone, another head
        ["dataset=imagefolder"],  # same model, another number of classes (3)
    ],
    ids=["other-model", "other-head", "other-classes"],
)
def test_resume_from_a_checkpoint_of_another_model_is_refused(tmp_path, image_folder, two_epochs, overrides):
    last = two_epochs[0] / "checkpoints" / "last.ckpt"
    if "dataset=imagefolder" in overrides:
        overrides = [*overrides, f"dataset.root={image_folder}", "dataset.train_per_class=null"]
    proc, run_dir = _run(tmp_path, "run", "strategy.epochs=3", f"trainer.ckpt_path={last}", *overrides, check=False)
    _assert_clean_error(proc, run_dir, "checkpoint", str(last), "not of this model/head")


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory) -> Path:
    """head_only with lr=0: nothing changes (BatchNorm frozen too), so val accuracy is the same every
    epoch and the best checkpoint (the first of equals) is epoch 0 of 2."""
    tmp = tmp_path_factory.mktemp("flat")
    overrides = ("strategy.epochs=2", "strategy.optimizer.lr=0", "strategy.schedule.preset=head_only")
    _, run_dir = _run(tmp, "run", *overrides, "strategy.schedule.milestones=[]", "dataset.train_per_class=5")
    return run_dir


def test_curve_has_every_epoch_when_the_best_epoch_is_not_the_last(flat_run):
    assert sorted(csv_val_top1(flat_run)) == [0, 1]
    result = read_json(flat_run / "results.json")
    assert [row["epoch"] for row in result["curve"]] == [0, 1]


def test_last_ckpt_is_the_last_epoch(flat_run):
    import torch

    state = torch.load(flat_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["epoch"] == 1
