"""Reliability of fine-tuning and its data (issue 13): few-shot and loader settings that were silently
ignored, zero epochs, overwrite and resume under other settings, and training images dropped by
drop_last. In-process on tiny data (a random-weight resnet18 on a 3-class image folder)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from test_run_wiring import compose_cfg

from tlbench.cli import config_dir
from tlbench.data.datamodule import TransferDataModule
from tlbench.data.samples import SubsetSamples
from tlbench.data.subsets import per_class_subset
from tlbench.distributed import samplers
from tlbench.distributed.samplers import EpochShuffleSampler, TrainingBatches
from tlbench.errors import ConfigError
from tlbench.finetune import resume as resume_module
from tlbench.finetune.checks import check_finetune_config
from tlbench.finetune.module import FineTuneModule
from tlbench.finetune.resume import CHECKPOINT_KEY, check_settings, find_resume
from tlbench.run import run

TINY = [
    "strategy=finetune",
    "model=timm",
    "model.name=resnet18",
    "model.pretrained=false",
    "model.data_config.input_size=[3,32,32]",
    "strategy.epochs=1",
    "strategy.schedule.preset=full",
    "strategy/lr_schedule=constant",
    "strategy.optimizer.lr=0.01",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "trainer.num_nodes=1",
]


@pytest.fixture(autouse=True)
def quiet_environment(monkeypatch: pytest.MonkeyPatch):
    """No SLURM or launcher variables from the surrounding shell; one intra-op thread."""
    for name in list(os.environ):
        if name.startswith("SLURM_") or name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK"):
            monkeypatch.delenv(name, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def finetune_cfg(tmp_path: Path, root: Path, *overrides: str):
    return compose_cfg(tmp_path, root, *TINY, *overrides)  # TINY's input size replaces SMALL's


def digits(**loader) -> TransferDataModule:
    return TransferDataModule("digits", transform=lambda image: image, input_size=(3, 8, 8), **loader)


# --- (2) dataset.train_per_class, val_fraction, batch_size ---


@pytest.mark.parametrize("value", [0, -1, 2.5, "3", True])
def test_train_per_class_zero_negative_or_not_whole_is_refused(value):
    with pytest.raises(ConfigError, match=r"dataset\.train_per_class must be >= 1, a whole number.*got"):
        digits(train_per_class=value)


def test_train_per_class_null_uses_every_image_and_k_subsamples():
    assert digits(train_per_class=None).split_sizes()["train"] == 1257
    assert digits(train_per_class=3).split_sizes()["train"] == 30


@pytest.mark.parametrize(
    "loader, key",
    [
        ({"val_fraction": -0.1}, "dataset.val_fraction"),
        ({"val_fraction": 1.0}, "dataset.val_fraction"),
        ({"val_fraction": "0.2"}, "dataset.val_fraction"),
        ({"val_fraction": True}, "dataset.val_fraction"),
        ({"batch_size": 0}, "dataset.batch_size"),
        ({"batch_size": 2.5}, "dataset.batch_size"),
        ({"batch_size": "8"}, "dataset.batch_size"),
        ({"num_workers": -1}, "dataset.num_workers"),
        ({"few_shot_seed": 0.5}, "dataset.few_shot_seed"),
    ],
)
def test_bad_loader_settings_are_refused_naming_the_key(loader, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        digits(**loader)


def test_val_fraction_zero_or_null_holds_out_nothing():
    assert "val" not in digits(val_fraction=0.0).split_names
    assert "val" not in digits(val_fraction=None).split_names
    assert digits(val_fraction=0.2).split_sizes()["val"] > 0


def test_train_per_class_above_some_classes_warns_naming_them(caplog):
    labels = np.array([0] * 5 + [1] * 2 + [2] * 3)
    with caplog.at_level(logging.WARNING, logger="tlbench.data.subsets"):
        chosen = per_class_subset(labels, 4, seed=0, classes=["ant", "bee", "cat"])
    assert sorted(np.bincount(labels[chosen]).tolist()) == [2, 3, 4]
    message = caplog.text
    assert "train_per_class=4 is more than 2 of 3 classes have" in message
    assert "bee (2), cat (3)" in message and "ant" not in message
    assert "they get all their training images" in message


def test_train_per_class_above_every_class_warns_that_nothing_is_subsampled(caplog):
    with caplog.at_level(logging.WARNING, logger="tlbench.data.subsets"):
        data = digits(train_per_class=1000)
    assert data.split_sizes()["train"] == 1257
    assert "train_per_class=1000 is more than every class has" in caplog.text
    assert "all 1257 training images are used" in caplog.text
    # ten classes named, none counted on
    assert "and " not in caplog.text.split("Images per class:")[1]


def test_train_per_class_warning_names_ten_classes_then_counts(caplog):
    labels = np.repeat(np.arange(14), 2)
    with caplog.at_level(logging.WARNING, logger="tlbench.data.subsets"):
        per_class_subset(labels, 3, seed=0)
    assert "0 (2), 1 (2)" in caplog.text and "9 (2) and 4 more" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tlbench.data.subsets"):
        per_class_subset(labels, 2, seed=0)  # exactly every class's size: nothing to say
    assert caplog.text == ""


# --- (3) strategy.epochs=0 and other values that cannot train ---


def test_zero_epochs_is_refused_before_anything_is_built(tmp_path, image_folder):
    cfg = finetune_cfg(tmp_path, image_folder, "strategy.epochs=0")
    with pytest.raises(ConfigError, match=r"strategy\.epochs must be >= 1.*got 0.*untrained new head"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize(
    "override, key",
    [
        ("strategy.epochs=-2", "strategy.epochs"),
        ("strategy.epochs=1.5", "strategy.epochs"),
        ("strategy.epochs=two", "strategy.epochs"),
        ("strategy.optimizer.lr=-0.1", "strategy.optimizer.lr"),
        ("strategy.optimizer._target_=torch.optim.RMSprp", "strategy.optimizer._target_"),
        ("strategy.optimizer._partial_=false", "strategy.optimizer._partial_"),
        ("strategy.optimizer.momentum=-0.5", "strategy.optimizer.momentum"),
        ("strategy.optimizer.weight_decay=-1", "strategy.optimizer.weight_decay"),
        ("strategy.lr_schedule._target_=tlbench.finetune.lr_schedules.Linear", "strategy.lr_schedule._target_"),
        ("strategy.lr_schedule.warmup_steps=-1", "strategy.lr_schedule.warmup_steps"),
        ("strategy.lr_decay=-0.5", "strategy.lr_decay"),
        ("strategy.label_smoothing=1.0", "strategy.label_smoothing"),
        ("strategy.head.dropout=1.0", "strategy.head.dropout"),
        ("strategy.schedule.every=0.5", "strategy.schedule.every"),
    ],
)
def test_values_that_cannot_train_are_refused(tmp_path, image_folder, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_finetune_config(finetune_cfg(tmp_path, image_folder, override).strategy)


def test_default_finetune_config_passes(tmp_path, image_folder):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        check_finetune_config(compose("config", overrides=["strategy=finetune"]).strategy)
    check_finetune_config(finetune_cfg(tmp_path, image_folder, "strategy.optimizer.lr=0").strategy)  # lr 0: allowed


# --- (5) overwrite and resume under other settings ---


def test_overwrite_trains_afresh_instead_of_resuming(tmp_path, image_folder):
    run_dir = tmp_path / "run"
    first = run(finetune_cfg(tmp_path, image_folder), run_dir)
    assert first.curve[0]["learning_rates"]["head"] == pytest.approx(0.01)

    again = run(finetune_cfg(tmp_path, image_folder, "strategy.optimizer.lr=0.1", "overwrite=true"), run_dir)
    assert again.classifier["resumed_from"] is None
    assert [row["epoch"] for row in again.curve] == [0]
    assert again.curve[0]["learning_rates"]["head"] == pytest.approx(0.1)  # trained now, with the new lr
    assert again.classifier["training_attempts"] == 1
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt[CHECKPOINT_KEY]["settings"]["strategy"]["optimizer"]["lr"] == 0.1


def test_resume_under_other_training_settings_is_refused(tmp_path, image_folder):
    run_dir = tmp_path / "run"
    run(finetune_cfg(tmp_path, image_folder), run_dir)
    (run_dir / "results.json").unlink()  # as if the job had been killed before writing its result
    changed = ("strategy.optimizer.lr=0.1", "seed=3", "dataset.batch_size=4")
    with pytest.raises(ConfigError) as caught:
        run(finetune_cfg(tmp_path, image_folder, *changed), run_dir)
    message = str(caught.value)
    assert "this run directory's checkpoint" in message
    assert "strategy.optimizer.lr: 0.01 -> 0.1" in message
    assert "seed: 0 -> 3" in message
    assert "dataset.batch_size: 8 -> 4" in message
    assert "overwrite=true" in message and "hydra.run.dir" in message


def test_resume_with_the_same_settings_continues_and_sums_the_timings(tmp_path, image_folder):
    run_dir = tmp_path / "run"
    first = run(finetune_cfg(tmp_path, image_folder), run_dir)
    (run_dir / "results.json").unlink()
    # the data staged elsewhere (dataset.root) and other workers do not change training
    moved = shutil.copytree(image_folder, tmp_path / "staged")
    resumed = run(finetune_cfg(tmp_path, image_folder, f"dataset.root={moved}"), run_dir)
    assert resumed.classifier["resumed_from"] == str(run_dir / "checkpoints" / "last.ckpt")
    assert resumed.curve == first.curve
    assert resumed.classifier["training_attempts"] == 2
    timings = resumed.timings
    assert timings["fit"] > timings["fit_this_attempt"]
    assert timings["fit"] >= first.timings["fit"] * 0.5  # the first attempt's training is counted


def _fake_checkpoint(path: Path, attempt: dict | None, settings: dict | None = None, completed: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"settings": settings or {}, "attempt": attempt, "fit_seconds": 5.0, "attempts": 1}
    loops = {"fit_loop": {"epoch_progress": {"current": {"completed": completed}}}}
    torch.save({CHECKPOINT_KEY: record, "loops": loops, "epoch": completed - 1}, path)


def _slurm(monkeypatch, job: str, restart: int) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", job)
    monkeypatch.setenv("SLURM_RESTART_COUNT", str(restart))


def test_overwrite_continues_only_a_requeue_of_the_job_that_wrote_the_checkpoint(tmp_path, monkeypatch):
    last = tmp_path / "checkpoints" / "last.ckpt"
    _fake_checkpoint(last, {"slurm_job": "77", "restart": 0})
    (tmp_path / "results.json").write_text("{}")

    _slurm(monkeypatch, "77", 1)  # the same job, requeued: it continues its own overwrite=true run
    found = find_resume(None, tmp_path, overwrite=True)
    assert found is not None and found.own and found.path == str(last)

    _slurm(monkeypatch, "77", 0)  # the same attempt again (a second command in one job): afresh
    monkeypatch.setenv("RANK", "1")  # another rank: does not resume, and leaves the files to rank 0
    assert find_resume(None, tmp_path, overwrite=True) is None
    assert last.is_file()
    monkeypatch.delenv("RANK")
    _slurm(monkeypatch, "78", 1)  # another job
    assert find_resume("/elsewhere/x.ckpt", tmp_path, overwrite=True).path == "/elsewhere/x.ckpt"
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "results.json").exists()


def test_overwrite_without_slurm_always_starts_afresh(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    _fake_checkpoint(last, None)
    (tmp_path / "csv").mkdir()
    assert find_resume(None, tmp_path, overwrite=False).path == str(last)  # without overwrite: resume
    assert find_resume(None, tmp_path, overwrite=True) is None
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "csv").exists()


def test_overwrite_refuses_an_explicit_checkpoint_it_would_remove(tmp_path):
    inside = tmp_path / "checkpoints" / "epoch3.ckpt"
    _fake_checkpoint(inside, None)
    with pytest.raises(ConfigError, match=r"lies in this run directory's checkpoints/.*overwrite=true"):
        find_resume(str(inside), tmp_path, overwrite=True)
    assert inside.is_file()


SETTINGS = {"seed": 0, "strategy": {"epochs": 2, "optimizer": {"lr": 0.01}}}


def test_explicit_checkpoint_may_continue_for_more_epochs_only(tmp_path, caplog):
    path = tmp_path / "other.ckpt"
    _fake_checkpoint(path, None, SETTINGS, completed=2)
    checkpoint = torch.load(path, weights_only=False)
    longer = {"seed": 0, "strategy": {"epochs": 3, "optimizer": {"lr": 0.01}}}
    with caplog.at_level(logging.WARNING, logger="tlbench.finetune.resume"):
        check_settings(str(path), checkpoint, longer, own=False, epochs=3)
    assert "LR schedule of the remaining epochs follows the new length" in caplog.text
    with pytest.raises(ConfigError, match=r"has completed 2 epochs and strategy\.epochs=2: nothing would be trained"):
        check_settings(str(path), checkpoint, SETTINGS, own=False, epochs=2)
    other_lr = {"seed": 0, "strategy": {"epochs": 3, "optimizer": {"lr": 0.1}}}
    with pytest.raises(ConfigError, match=r"trainer\.ckpt_path=.*strategy\.optimizer\.lr: 0\.01 -> 0\.1"):
        check_settings(str(path), checkpoint, other_lr, own=False, epochs=3)
    # the run directory's own checkpoint: the number of epochs is a training setting like the others
    with pytest.raises(ConfigError, match=r"strategy\.epochs: 2 -> 3"):
        check_settings(str(path), checkpoint, longer, own=True, epochs=3)
    check_settings(str(path), checkpoint, SETTINGS, own=True, epochs=2)  # a finished fit, evaluated again


def test_checkpoint_without_a_record_is_resumed_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="tlbench.finetune.resume"):
        check_settings("old.ckpt", {"epoch": 0}, SETTINGS, own=True, epochs=2)
    assert "does not record its training settings" in caplog.text


def test_no_rank_removes_while_deciding_differently(tmp_path, monkeypatch):
    """Lightning's own DDP children (LOCAL_RANK > 0) never remove files."""
    _fake_checkpoint(tmp_path / "checkpoints" / "last.ckpt", None)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert find_resume(None, tmp_path, overwrite=True) is None
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert resume_module._first_process() is False


# --- (9) every training image once per epoch ---


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 8, 9, 10, 16, 17, 20])
def test_training_batches_keep_every_sample_and_no_single_one(size, batch_size):
    batches = list(TrainingBatches(range(size), batch_size))
    assert len(batches) == len(TrainingBatches(range(size), batch_size))
    assert [i for batch in batches for i in batch] == list(range(size))  # each once, in order
    if batch_size > 1 and size > 1:
        assert min(len(b) for b in batches) >= 2
    assert max((len(b) for b in batches), default=0) <= (3 if batch_size == 2 else batch_size)


def _simulate(monkeypatch, rank: int, world: int) -> None:
    monkeypatch.setattr(samplers, "rank_and_world", lambda: (rank, world))


@pytest.mark.parametrize(
    "size, batch_size, world",
    [(20, 8, 1), (20, 8, 2), (17, 8, 1), (18, 8, 2), (19, 8, 2), (21, 8, 4), (10, 3, 3)],
)
def test_training_loader_sees_every_image_on_one_and_several_ranks(monkeypatch, size, batch_size, world):
    data = digits(batch_size=batch_size, train_per_class=3)  # 30 training images, the first `size` kept
    data.dataset.splits["train"] = SubsetSamples(data.dataset.splits["train"], np.arange(size))
    seen, steps = [], []
    for rank in range(world):
        _simulate(monkeypatch, rank, world)
        sampler = EpochShuffleSampler(size, seed=0, epoch=lambda: 1)
        loader = data.loader("train", training=True, sampler=sampler)
        batches = [[index for index, _ in batch] for batch in loader.batch_sampler]
        assert len(batches) == len(loader)
        assert all(len(batch) >= 2 for batch in batches), batches  # BatchNorm trains on every batch
        steps.append(len(batches))
        seen += [index for batch in batches for index in batch]
    assert set(seen) == set(range(size))  # every image at least once
    assert len(steps) == world and len(set(steps)) == 1  # DDP: every rank runs the same number of steps
    assert len(seen) - size <= world - 1  # the padding of EpochShuffleSampler: at most world - 1 repeats


def test_a_training_epoch_sees_every_image(tmp_path, image_folder, monkeypatch):
    """Through run(): 18 training images in batches of 8 (2 were dropped every epoch before)."""
    seen: dict[int, list[int]] = {}
    original = FineTuneModule.training_step

    def spy(self, batch, batch_idx):
        seen.setdefault(self.current_epoch, []).extend(batch["index"].tolist())
        return original(self, batch, batch_idx)

    monkeypatch.setattr(FineTuneModule, "training_step", spy)
    result = run(finetune_cfg(tmp_path, image_folder, "strategy.epochs=2"), tmp_path / "run")
    assert result.split_sizes["train"] == 18
    assert sorted(seen) == [0, 1]
    for indices in seen.values():
        assert sorted(indices) == list(range(18))


def test_batch_size_one_with_trainable_batchnorm_is_refused(tmp_path, image_folder):
    with pytest.raises(ConfigError, match=r"BatchNorm.*dataset\.batch_size=1"):
        run(finetune_cfg(tmp_path, image_folder, "dataset.batch_size=1"), tmp_path / "run")
    # head only: no BatchNorm trains, batches of one are fine
    cfg = finetune_cfg(tmp_path, image_folder, "dataset.batch_size=1", "strategy.schedule.preset=head_only")
    assert run(cfg, tmp_path / "head_only").split_sizes["train"] == 18


# --- undecodable images in fine-tuning: listed like extraction's, never a NaN step ---


def test_finetune_lists_the_undecodable_images_it_skipped(tmp_path, image_folder):
    """Fine-tuning skipped undecodable images (ok=False) but recorded skipped_files={}."""
    bad_train = image_folder / "train" / "red" / "0.png"
    bad_test = image_folder / "test" / "blue" / "1.png"
    for path in (bad_train, bad_test):
        path.write_bytes(b"no image here" * 8)
    result = run(finetune_cfg(tmp_path, image_folder), tmp_path / "run")
    assert result.skipped_files == {"train": [str(bad_train)], "test": [str(bad_test)]}
    assert result.classifier["evaluated_images"]["test"] == result.split_sizes["test"] - 1


@pytest.mark.parametrize(
    ("ok", "batchnorm"),
    [([False, False, False], False), ([False, True, False], True)],
    ids=["none decodable", "one decodable with BatchNorm"],
)
def test_a_batch_without_enough_decodable_images_is_a_zero_step(ok, batchnorm):
    module = FineTuneModule.__new__(FineTuneModule)
    torch.nn.Module.__init__(module)
    layers = [torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)] if batchnorm else [torch.nn.Linear(4, 4)]
    module.backbone = torch.nn.Sequential(*layers, torch.nn.Linear(4, 2)).train()
    module.loss = torch.nn.CrossEntropyLoss()
    module.unreadable = {}
    module.log = lambda *args, **kwargs: None
    batch = {
        "image": torch.randn(3, 4),
        "label": torch.tensor([0, 1, 0]),
        "index": torch.tensor([5, 6, 7]),
        "ok": torch.tensor(ok),
    }
    loss = module.training_step(batch, 0)
    assert float(loss) == 0.0 and loss.requires_grad
    loss.backward()
    assert all(p.grad is not None and torch.all(p.grad == 0) for p in module.backbone.parameters())
    assert module.unreadable == {"train": {i for i, good in zip((5, 6, 7), ok) if not good}}
