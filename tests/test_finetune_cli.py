"""`tlbench strategy=finetune` end to end through the real CLI: learning on digits, the results.json
record and its curve, checkpoints, resuming with trainer.ckpt_path, evaluation without val, and bad
input stopped before training (exit code 2, one `tlbench: error:` line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import read_json, run_cli

pytestmark = pytest.mark.slow

# Small and fast: 30 training images per class at 64x64, a 20 % validation holdout.
FAST = (
    "strategy=finetune",
    "dataset.val_fraction=0.2",
    "dataset.train_per_class=30",
    "model.data_config.input_size=[3,64,64]",
    "trainer.enable_progress_bar=false",
)


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
    assert [row["epoch"] for row in curve] == [0, 1, 2]
    # progressive, every=1: the head alone, then one more group from the top each epoch
    assert [row["trainable_groups"] for row in curve] == [[], [groups - 1], [groups - 2, groups - 1]]
    assert curve[0]["learning_rates"]["head"] > 0
    assert all(curve[0]["learning_rates"][f"group{g}"] == 0 for g in range(groups))
    for row in curve:
        assert {"train/loss", "val/top1", "val/mean_per_class"} <= set(row)
    # it learns: the last epoch beats its own epoch 0 on val
    assert curve[-1]["val/top1"] > curve[0]["val/top1"], curve
    # the tested checkpoint is the best on val
    assert result["metrics"]["val"]["top1"] == pytest.approx(max(row["val/top1"] for row in curve), abs=1e-6)


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
    assert curve[2]["trainable_groups"] == [groups - 2, groups - 1]
    assert resumed["config"]["trainer"]["ckpt_path"] == str(last)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


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
