"""Fast unit tests of the distributed pieces: the SLURM environment, the config resolvers, the
rank-aware samplers, per-sample augmentation seeds, shard merging, resuming and finished runs.

Every test clears the SLURM / launcher variables first, so it also passes inside a Slurm job.
"""

from __future__ import annotations

import math
import os
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image
from torchvision import transforms

import tlbench  # noqa: F401  (registers the run_id and slurm resolvers)
from tlbench.data.datamodule import TransformedSplit, seeded_rng
from tlbench.distributed import environment as env
from tlbench.distributed import samplers
from tlbench.distributed.samplers import EpochShuffleSampler, ShardSampler, sample_seed
from tlbench.embedding.shards import gather_features, merge_shards, shard_name
from tlbench.embedding.store import FeatureSet, FeatureStore, FeatureWriter
from tlbench.errors import ConfigError, RunFinished
from tlbench.finetune.resume import resume_checkpoint
from tlbench.run import check_not_finished

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}$")
LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "SUBMITIT_EXECUTOR")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No SLURM_*, RANK or SUBMITIT_EXECUTOR from the surrounding shell or job."""
    for name in list(os.environ):
        if name.startswith("SLURM_") or name in LAUNCHER_VARIABLES:
            monkeypatch.delenv(name, raising=False)
    return monkeypatch


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str | int) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))


# --- tlbench.distributed.environment ---


def test_not_slurm_managed_without_slurm() -> None:
    assert not env.slurm_managed()
    assert env.srun_step() is None
    assert env.slurm_nodes() is None
    assert env.slurm_tasks_per_node() is None
    assert env.process_rank() == 0


@pytest.mark.parametrize("job_name", ["bash", "interactive"])
def test_interactive_shell_is_not_slurm_managed(monkeypatch: pytest.MonkeyPatch, job_name: str) -> None:
    set_env(monkeypatch, SLURM_NTASKS=2, SLURM_JOB_ID=123, SLURM_JOB_NAME=job_name)
    assert not env.slurm_managed()


def test_slurm_managed_batch_job(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=1, SLURM_JOB_ID=123, SLURM_JOB_NAME="train.sbatch")
    assert env.slurm_managed()


@pytest.mark.parametrize(
    ("step", "expected"),
    [("0", 0), ("1", 1), ("12", 12), ("4294967294", None), ("4294967291", None), ("extern", None), ("", None)],
)
def test_srun_step(monkeypatch: pytest.MonkeyPatch, step: str, expected: int | None) -> None:
    set_env(monkeypatch, SLURM_STEP_ID=step)
    assert env.srun_step() == expected


def test_run_id_plain_job(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=1, SLURM_JOB_ID=123)
    assert env.run_id() == "slurm123"


def test_run_id_first_srun_step_and_batch_step_keep_the_job_name(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=2, SLURM_JOB_ID=123, SLURM_STEP_ID=0)
    assert env.run_id() == "slurm123"
    set_env(monkeypatch, SLURM_STEP_ID=4294967294)  # the batch step
    assert env.run_id() == "slurm123"


def test_run_id_array_task(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=1, SLURM_JOB_ID=80, SLURM_ARRAY_JOB_ID=77, SLURM_ARRAY_TASK_ID=3)
    assert env.run_id() == "slurm77_3"


def test_run_id_second_srun_step(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=2, SLURM_JOB_ID=123, SLURM_STEP_ID=1)
    assert env.run_id() == "slurm123.1"


def test_run_id_array_task_with_step(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=1, SLURM_JOB_ID=80, SLURM_ARRAY_JOB_ID=77, SLURM_ARRAY_TASK_ID=3, SLURM_STEP_ID=2)
    assert env.run_id() == "slurm77_3.2"


def test_run_id_outside_slurm_is_a_timestamp() -> None:
    assert TIMESTAMP.match(env.run_id())


def test_run_id_interactive_job_is_a_timestamp(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=1, SLURM_JOB_ID=123, SLURM_JOB_NAME="interactive")
    assert TIMESTAMP.match(env.run_id())


def test_run_id_without_job_id_is_a_timestamp(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=1)
    assert TIMESTAMP.match(env.run_id())


def test_tasks_per_node_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS_PER_NODE=3, SLURM_NTASKS=8, SLURM_NNODES=2)
    assert env.slurm_tasks_per_node() == 3


def test_tasks_per_node_derived_from_tasks_and_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=8, SLURM_NNODES=2)
    assert env.slurm_tasks_per_node() == 4


def test_tasks_per_node_derived_with_job_num_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=6, SLURM_JOB_NUM_NODES=3)
    assert env.slurm_nodes() == 3
    assert env.slurm_tasks_per_node() == 2


def test_tasks_per_node_uneven_is_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=5, SLURM_NNODES=2)
    assert env.slurm_tasks_per_node() is None


def test_launched_world_size(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env.launched_world_size() == 1
    set_env(monkeypatch, SLURM_NTASKS=4, SLURM_JOB_ID=1)
    assert env.launched_world_size() == 1  # the batch shell: srun has not started the ranks
    set_env(monkeypatch, SLURM_STEP_ID=0)
    assert env.launched_world_size() == 4
    set_env(monkeypatch, WORLD_SIZE=8)  # torchrun's WORLD_SIZE wins
    assert env.launched_world_size() == 8


def test_process_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=4, SLURM_JOB_ID=1, SLURM_PROCID=3)
    assert env.process_rank() == 0  # the batch shell: no srun step yet
    set_env(monkeypatch, SLURM_STEP_ID=0)
    assert env.process_rank() == 3
    set_env(monkeypatch, RANK=2)  # torchrun's RANK wins
    assert env.process_rank() == 2


def test_slurm_default_outside_slurm_returns_the_default() -> None:
    assert env.slurm_default("workers", 4) == 4
    assert env.slurm_default("tasks_per_node", 1) == 1
    assert env.slurm_default("nodes", 1) == 1


@pytest.mark.parametrize(("cpus", "workers"), [(10, 9), (1, 0), (17, 16), (64, 16)])
def test_slurm_default_workers(monkeypatch: pytest.MonkeyPatch, cpus: int, workers: int) -> None:
    set_env(monkeypatch, SLURM_NTASKS=1, SLURM_CPUS_PER_TASK=cpus)
    assert env.slurm_default("workers", 4) == workers


def test_slurm_default_workers_without_cpus_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=1)
    assert env.slurm_default("workers", 4) == 4


@pytest.mark.parametrize(("cpus", "workers"), [(2, 1), (1, 0), (40, 16)])
def test_auto_workers_from_the_cpus_this_process_may_use(
    monkeypatch: pytest.MonkeyPatch, cpus: int, workers: int
) -> None:
    monkeypatch.setattr(env.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert env.slurm_default("workers", "auto") == workers
    set_env(monkeypatch, SLURM_NTASKS=1, SLURM_CPUS_PER_TASK=8)  # SLURM's allocation wins
    assert env.slurm_default("workers", "auto") == 7


def test_slurm_default_tasks_and_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=8, SLURM_NNODES=2)
    assert env.slurm_default("tasks_per_node", 1) == 4
    assert env.slurm_default("nodes", 1) == 2


def test_slurm_default_unknown_key(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=1)
    with pytest.raises(ConfigError, match="gpus"):
        env.slurm_default("gpus", 1)


@pytest.mark.parametrize(
    ("devices", "count"),
    [(1, 1), (4, 4), ("2", 2), ("0,1", 2), ("0,1,", 2), ([0, 1, 2], 3), ((0,), 1), ("auto", None), (-1, None)],
)
def test_device_count(devices: object, count: int | None) -> None:
    assert env.device_count(devices) == count


def test_check_allocation_outside_slurm_passes() -> None:
    env.check_allocation(devices=8, num_nodes=3)  # nothing to compare against: no error


def test_check_allocation_devices_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=2, SLURM_NTASKS_PER_NODE=2, SLURM_NNODES=1, SLURM_STEP_ID=0)
    with pytest.raises(ConfigError, match=r"trainer\.devices"):
        env.check_allocation(devices=1, num_nodes=1)


def test_check_allocation_nodes_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=4, SLURM_NTASKS_PER_NODE=2, SLURM_NNODES=2, SLURM_STEP_ID=0)
    with pytest.raises(ConfigError, match=r"trainer\.num_nodes"):
        env.check_allocation(devices=2, num_nodes=1)


def test_check_allocation_several_tasks_without_srun(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=2, SLURM_NTASKS_PER_NODE=2, SLURM_NNODES=1)
    with pytest.raises(ConfigError, match="srun"):
        env.check_allocation(devices=2, num_nodes=1)


def test_check_allocation_one_task_without_srun_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=1, SLURM_NNODES=1)
    env.check_allocation(devices=1, num_nodes=1)


@pytest.mark.parametrize("devices", [2, "2", "0,1", [0, 1], "auto", -1])
def test_check_allocation_matching_passes(monkeypatch: pytest.MonkeyPatch, devices: object) -> None:
    set_env(monkeypatch, SLURM_NTASKS=4, SLURM_NTASKS_PER_NODE=2, SLURM_NNODES=2, SLURM_STEP_ID=0)
    env.check_allocation(devices=devices, num_nodes=2)
    env.check_allocation(devices=devices, num_nodes="2")


def test_check_allocation_interactive_shell_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, SLURM_NTASKS=2, SLURM_NTASKS_PER_NODE=2, SLURM_NNODES=1, SLURM_JOB_NAME="interactive")
    env.check_allocation(devices=1, num_nodes=1)


def test_requeue_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env.requeue_owner("auto") == "lightning"
    set_env(monkeypatch, SUBMITIT_EXECUTOR="local")
    assert env.requeue_owner("auto") == "lightning"
    set_env(monkeypatch, SUBMITIT_EXECUTOR="slurm")
    assert env.requeue_owner("auto") == "submitit"
    for setting in ("lightning", "submitit", "none"):
        assert env.requeue_owner(setting) == setting


def test_requeue_owner_bad_value() -> None:
    with pytest.raises(ConfigError, match=r"slurm\.requeue.*'sometimes'"):
        env.requeue_owner("sometimes")


# --- tlbench.resolvers, through the real config ---


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


SLURM_JOB = {
    "SLURM_NTASKS": 8,
    "SLURM_NTASKS_PER_NODE": 4,
    "SLURM_NNODES": 2,
    "SLURM_CPUS_PER_TASK": 10,
    "SLURM_JOB_ID": 55,
}


def test_config_defaults_from_slurm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    set_env(monkeypatch, **SLURM_JOB)
    cfg = compose_config("dataset=imagefolder", f"paths.output_dir={tmp_path}")
    assert cfg.trainer.devices == 4
    assert cfg.trainer.num_nodes == 2
    assert cfg.dataset.num_workers == 9
    assert cfg.hydra.run.dir == f"{tmp_path}/runs/slurm55_imagefolder_efficientnet_lite0_fne"


def test_config_defaults_without_slurm(tmp_path: Path) -> None:
    cfg = compose_config("dataset=imagefolder", f"paths.output_dir={tmp_path}")
    assert cfg.trainer.devices == 1
    assert cfg.trainer.num_nodes == 1
    assert cfg.dataset.num_workers == min(len(os.sched_getaffinity(0)) - 1, 16)
    run_dir = Path(cfg.hydra.run.dir)
    assert run_dir.parent == tmp_path / "runs"
    assert TIMESTAMP.match(run_dir.name.removesuffix("_imagefolder_efficientnet_lite0_fne"))


def test_config_overrides_win_over_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, **SLURM_JOB)
    cfg = compose_config("dataset=imagefolder", "trainer.devices=2", "dataset.num_workers=0")
    assert cfg.trainer.devices == 2
    assert cfg.dataset.num_workers == 0


def test_run_id_resolved_once_per_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cached: the run dir of one composed config does not change when the environment does."""
    set_env(monkeypatch, **SLURM_JOB)
    cfg = OmegaConf.create({"dir": "${run_id:}"})
    assert cfg.dir == "slurm55"
    set_env(monkeypatch, SLURM_JOB_ID=56)
    assert cfg.dir == "slurm55"


# --- tlbench.distributed.samplers ---


def simulate(monkeypatch: pytest.MonkeyPatch, rank: int, world: int) -> None:
    monkeypatch.setattr(samplers, "rank_and_world", lambda: (rank, world))


def test_rank_and_world_without_process_group() -> None:
    assert samplers.rank_and_world() == (0, 1)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("size", range(11))
def test_shard_sampler_covers_each_index_once(monkeypatch: pytest.MonkeyPatch, size: int, world: int) -> None:
    seen: list[int] = []
    for rank in range(world):
        simulate(monkeypatch, rank, world)
        sampler = ShardSampler(size)
        indices = list(sampler)
        assert len(sampler) == len(indices)
        assert indices == sorted(indices)  # in order
        seen += indices
    assert sorted(seen) == list(range(size))  # each index exactly once, no padding


def epoch_shuffle(monkeypatch: pytest.MonkeyPatch, size: int, world: int, seed: int = 0, epoch: int = 0):
    """Every rank's (index, seed) pairs."""
    out = []
    for rank in range(world):
        simulate(monkeypatch, rank, world)
        sampler = EpochShuffleSampler(size, seed=seed, epoch=lambda: epoch)
        pairs = list(sampler)
        assert len(pairs) == len(sampler)
        out.append(pairs)
    return out


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 10])
def test_epoch_shuffle_sampler_equal_lengths_and_coverage(
    monkeypatch: pytest.MonkeyPatch, size: int, world: int
) -> None:
    per_rank = epoch_shuffle(monkeypatch, size, world, seed=3, epoch=1)
    assert all(len(pairs) == math.ceil(size / world) for pairs in per_rank)
    indices = [index for pairs in per_rank for index, _ in pairs]
    assert set(indices) == set(range(size))
    padding = len(indices) - size
    assert 0 <= padding <= world - 1
    assert padding == math.ceil(size / world) * world - size


def test_epoch_shuffle_sampler_size_one_on_four_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    per_rank = epoch_shuffle(monkeypatch, 1, 4)
    assert [[index for index, _ in pairs] for pairs in per_rank] == [[0], [0], [0], [0]]


def test_epoch_shuffle_sampler_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    assert epoch_shuffle(monkeypatch, 0, 2) == [[], []]


def test_epoch_shuffle_sampler_order_depends_on_seed_and_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    simulate(monkeypatch, 0, 1)
    epoch = [0]
    first = EpochShuffleSampler(50, seed=7, epoch=lambda: epoch[0])
    second = EpochShuffleSampler(50, seed=7, epoch=lambda: epoch[0])
    order = list(first)
    assert order == list(second)
    assert [index for index, _ in order] != list(range(50))  # shuffled
    epoch[0] = 1  # read at iteration, not at construction
    next_epoch = list(first)
    assert next_epoch != order
    assert next_epoch == list(second)
    assert sorted(next_epoch) != sorted(order)  # the seeds of the same index change with the epoch
    epoch[0] = 0
    assert list(first) == order  # back to epoch 0: the same order again
    assert list(EpochShuffleSampler(50, seed=8, epoch=lambda: 0)) != order


@pytest.mark.parametrize("world", [1, 2, 3])
def test_epoch_shuffle_sampler_seeds_independent_of_rank(monkeypatch: pytest.MonkeyPatch, world: int) -> None:
    per_rank = epoch_shuffle(monkeypatch, 9, world, seed=11, epoch=2)
    for pairs in per_rank:
        for index, seed in pairs:
            assert seed == sample_seed(11, 2, index)
            assert 0 <= seed < 2**63
    # The global order dealt round-robin is the same permutation whatever the world size.
    dealt = [per_rank[step % world][step // world] for step in range(9)]
    assert dealt == epoch_shuffle(monkeypatch, 9, 1, seed=11, epoch=2)[0]


def test_sample_seed_varies() -> None:
    seeds = {sample_seed(0, epoch, index) for epoch in range(3) for index in range(100)}
    assert len(seeds) == 300
    assert sample_seed(1, 0, 0) != sample_seed(0, 0, 0)


# --- tlbench.data.datamodule: seeded augmentation ---


def test_seeded_rng_restores_global_state() -> None:
    random.seed(123)
    torch.manual_seed(123)
    expected_python, expected_torch = random.random(), torch.rand(3)
    random.seed(123)
    torch.manual_seed(123)
    with seeded_rng(5):
        inside = (random.random(), torch.rand(3))
    assert random.random() == expected_python
    assert torch.equal(torch.rand(3), expected_torch)
    with seeded_rng(5):
        again = (random.random(), torch.rand(3))
    assert inside[0] == again[0] and torch.equal(inside[1], again[1])


def test_seeded_rng_seeds_and_restores_numpy_too() -> None:
    """timm's RandAugment picks its operations with numpy's global RNG."""
    np.random.seed(7)
    expected = np.random.rand(3)
    np.random.seed(7)
    with seeded_rng(5):
        inside = np.random.rand(3)
    np.testing.assert_array_equal(np.random.rand(3), expected)
    np.random.seed(99)  # another numpy state before the block: the same draws inside
    with seeded_rng(5):
        np.testing.assert_array_equal(np.random.rand(3), inside)


def test_seeded_rng_restores_after_an_exception() -> None:
    state = torch.get_rng_state()
    python_state = random.getstate()
    with pytest.raises(ValueError), seeded_rng(1):
        torch.rand(5)
        random.random()
        raise ValueError
    assert torch.equal(torch.get_rng_state(), state)
    assert random.getstate() == python_state


def test_seeded_rng_none_is_a_no_op() -> None:
    torch.manual_seed(9)
    expected = torch.rand(2)
    torch.manual_seed(9)
    with seeded_rng(None):
        inside = torch.rand(2)
    assert torch.equal(inside, expected)


class TinySamples:
    def __init__(self, count: int = 3) -> None:
        rng = np.random.default_rng(0)
        self.images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(count)]
        self.labels = np.arange(count) % 2

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> Image.Image:
        return self.images[index]


def augmented_split() -> TransformedSplit:
    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(16, scale=(0.2, 1.0)),
            transforms.ToTensor(),
            transforms.Lambda(lambda t: t + random.random()),  # python's RNG as well
        ]
    )
    return TransformedSplit(TinySamples(), transform, input_size=(3, 16, 16))


def test_transformed_split_same_seed_same_augmentation() -> None:
    split = augmented_split()
    first = split[(1, 1234)]
    torch.rand(10)  # what ran before does not matter
    random.random()
    second = split[(1, 1234)]
    other = split[(1, 4321)]
    assert first["index"] == 1 and first["label"] == 1 and first["ok"]
    assert first["image"].shape == (3, 16, 16)
    assert torch.equal(first["image"], second["image"])
    assert not torch.equal(first["image"], other["image"])


def test_transformed_split_plain_index_uses_the_global_rng() -> None:
    split = augmented_split()
    torch.manual_seed(0)
    random.seed(0)
    first = split[2]
    torch.manual_seed(0)
    random.seed(0)
    second = split[2]
    third = split[2]
    assert first["index"] == 2 and first["label"] == 0
    assert torch.equal(first["image"], second["image"])
    assert not torch.equal(second["image"], third["image"])  # the global RNG moved on


# --- tlbench.distributed.shards ---


def feature_set(indices: list[int], skipped: list[int] | None = None, dim: int = 3) -> FeatureSet:
    """Rows derived from the index, so a merged set can be checked row by row."""
    idx = np.asarray(indices, dtype=np.int64)
    features = (idx[:, None] * 10 + np.arange(dim)[None, :]).astype(np.float32).reshape(len(idx), dim)
    return FeatureSet(
        features=features, labels=idx % 3, indices=idx, skipped=list(skipped or []), layout=[("pool", dim)]
    )


def assert_same(actual: FeatureSet, expected: FeatureSet) -> None:
    np.testing.assert_array_equal(actual.features, expected.features)
    np.testing.assert_array_equal(actual.labels, expected.labels)
    np.testing.assert_array_equal(actual.indices, expected.indices)
    assert actual.skipped == expected.skipped
    assert [tuple(x) for x in actual.layout] == [tuple(x) for x in expected.layout]


def merged(parts: list[FeatureSet], size: int, folder: Path, what: str = "split") -> FeatureSet:
    writer = FeatureWriter(folder)
    merge_shards(parts, size, writer, what)
    return writer.finish(parts[0].layout)


def test_merge_shards_orders_and_drops_duplicates(tmp_path: Path) -> None:
    # Two ranks of a padded DistributedSampler: rank 0 got 0, 2, 4; rank 1 got 1, 3 and 0 again.
    result = merged([feature_set([4, 0, 2]), feature_set([3, 1, 0])], 5, tmp_path / "m")
    assert_same(result, feature_set([0, 1, 2, 3, 4]))


def test_merge_shards_skipped_count_as_covered(tmp_path: Path) -> None:
    result = merged([feature_set([0, 3], skipped=[2]), feature_set([1], skipped=[4, 2])], 5, tmp_path / "m")
    assert result.indices.tolist() == [0, 1, 3]
    assert result.skipped == [2, 4]


def test_merge_shards_missing_index(tmp_path: Path) -> None:
    writer = FeatureWriter(tmp_path / "m")
    with pytest.raises(RuntimeError, match="cover") as info:
        merge_shards([feature_set([0, 1]), feature_set([3])], 4, writer, what="train")
    assert "train" in str(info.value) and "[2]" in str(info.value)
    assert writer.rows == 0, "nothing is written before coverage is checked"


@pytest.mark.parametrize("bad", [4, -1])
def test_merge_shards_out_of_range_index(tmp_path: Path, bad: int) -> None:
    with pytest.raises(RuntimeError, match="cover"):
        merge_shards([feature_set([0, 1]), feature_set([2, 3, bad])], 4, FeatureWriter(tmp_path / "m"))


def test_merge_shards_in_small_chunks_equals_one_piece(tmp_path: Path, monkeypatch) -> None:
    parts = [feature_set(list(range(0, 40, 2)), dim=5), feature_set(list(range(1, 40, 2)), dim=5)]
    whole = merged(parts, 40, tmp_path / "whole")
    monkeypatch.setattr("tlbench.embedding.store.CHUNK_BYTES", 3 * 5 * 4)  # 3 rows at a time
    chunked = merged(parts, 40, tmp_path / "chunked")
    assert_same(chunked, whole)
    assert_same(whole, feature_set(list(range(40)), dim=5))


class FakeStrategy:
    def __init__(self, world_size: int, global_rank: int) -> None:
        self.world_size = world_size
        self.global_rank = global_rank
        self.barriers: list[str] = []

    def barrier(self, name: str | None = None) -> None:
        self.barriers.append(name)


def commit_shard(shards: FeatureStore, part: FeatureSet, rank: int, world: int) -> None:
    writer = shards.writer(shard_name(rank, world))
    writer.append(part.features, part.labels, part.indices)
    writer.mark_skipped(part.skipped)
    shards.commit(shard_name(rank, world), writer, part.layout, {})


def test_gather_features_two_ranks(tmp_path: Path) -> None:
    shards, target = FeatureStore(tmp_path / "shards"), FeatureStore(tmp_path / "cache")
    commit_shard(shards, feature_set([1, 3, 0]), 1, 2)  # rank 1 padded with index 0
    commit_shard(shards, feature_set([0, 2, 4]), 0, 2)
    strategy1 = FakeStrategy(2, 1)
    assert gather_features(shards, 5, strategy1, "test", target, "key", {}) is None
    assert strategy1.barriers == ["tlbench_extraction_shards"]
    assert (tmp_path / "shards" / "rank1-of-2" / "features.npy").is_file()
    strategy0 = FakeStrategy(2, 0)
    result = gather_features(shards, 5, strategy0, "test", target, "key", {"split": "test"})
    assert strategy0.barriers == ["tlbench_extraction_shards"]
    assert result is not None
    assert_same(result, feature_set([0, 1, 2, 3, 4]))
    assert_same(target.load("key"), result)  # committed to the target store
    assert not (tmp_path / "shards").exists()


def test_gather_features_ignores_shards_of_another_world_size(tmp_path: Path) -> None:
    shards, target = FeatureStore(tmp_path / "shards"), FeatureStore(tmp_path / "cache")
    # A killed 3-rank run left a shard with a wrong row for index 1, and a stale 2-rank shard.
    commit_shard(shards, feature_set([7]), 2, 3)
    commit_shard(shards, feature_set([1, 2]), 1, 2)
    commit_shard(shards, feature_set([1, 3]), 1, 2)  # this run's rank 1 replaces the stale one
    commit_shard(shards, feature_set([0, 2]), 0, 2)
    result = gather_features(shards, 4, FakeStrategy(2, 0), "test", target, "key", {})
    assert result is not None
    assert_same(result, feature_set([0, 1, 2, 3]))


def test_gather_features_missing_rank_shard(tmp_path: Path) -> None:
    shards = FeatureStore(tmp_path / "shards")
    commit_shard(shards, feature_set([0, 1]), 0, 2)
    with pytest.raises(RuntimeError, match="rank 1"):
        gather_features(shards, 2, FakeStrategy(2, 0), "test", FeatureStore(tmp_path / "c"), "key", {})


# --- tlbench.finetune.resume ---


def test_resume_nothing(tmp_path: Path) -> None:
    assert resume_checkpoint(None, tmp_path) is None
    assert resume_checkpoint("", tmp_path) is None


def test_resume_last_checkpoint(tmp_path: Path) -> None:
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"last")
    assert resume_checkpoint(None, tmp_path) == str(last)


def test_resume_explicit_path_until_the_run_has_its_own_checkpoint(tmp_path: Path) -> None:
    assert resume_checkpoint("/elsewhere/epoch=3.ckpt", tmp_path) == "/elsewhere/epoch=3.ckpt"
    # a requeued continuation resumes its own progress, not the other run's checkpoint again
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"last")
    assert resume_checkpoint("/elsewhere/epoch=3.ckpt", tmp_path) == str(last)


def test_resume_sets_mid_epoch_checkpoints_aside(tmp_path: Path) -> None:
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(b"one")
    (tmp_path / "hpc_ckpt_2.ckpt").write_bytes(b"two")
    (tmp_path / "other.ckpt").write_bytes(b"other")
    assert resume_checkpoint(None, tmp_path) is None  # a mid-epoch checkpoint is never resumed from
    aside = tmp_path / "checkpoints" / "mid_epoch"
    assert not list(tmp_path.glob("hpc_ckpt_*.ckpt"))
    assert (aside / "hpc_ckpt_1.ckpt").read_bytes() == b"one"
    assert (aside / "hpc_ckpt_2.ckpt").read_bytes() == b"two"
    assert (tmp_path / "other.ckpt").read_bytes() == b"other"
    # A second call (another rank, or the next requeue) finds nothing to move and keeps the files.
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(b"last")
    assert resume_checkpoint(None, tmp_path) == str(last)
    assert sorted(p.name for p in aside.iterdir()) == ["hpc_ckpt_1.ckpt", "hpc_ckpt_2.ckpt"]
    assert (aside / "hpc_ckpt_1.ckpt").read_bytes() == b"one"


def test_resume_without_mid_epoch_checkpoints_creates_nothing(tmp_path: Path) -> None:
    resume_checkpoint(None, tmp_path)
    assert not (tmp_path / "checkpoints").exists()


# --- tlbench.run.check_not_finished ---


def test_check_not_finished_without_results(tmp_path: Path) -> None:
    check_not_finished(tmp_path, overwrite=False)
    check_not_finished(tmp_path / "not" / "created", overwrite=False)
    assert not (tmp_path / "not").exists()


def test_check_not_finished_refuses_a_finished_run(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text('{"accuracy": 0.9}')
    with pytest.raises(ConfigError, match="overwrite=true"):
        check_not_finished(tmp_path, overwrite=False)
    assert results.read_text() == '{"accuracy": 0.9}'


def test_check_not_finished_requeued_job_stops_quietly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text("{}")
    set_env(monkeypatch, SLURM_RESTART_COUNT=1)
    with pytest.raises(RunFinished):
        check_not_finished(tmp_path, overwrite=False)
    assert results.read_text() == "{}"
    assert not issubclass(RunFinished, ConfigError)


def test_check_not_finished_first_attempt_of_a_job_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text("{}")
    set_env(monkeypatch, SLURM_RESTART_COUNT=0)
    with pytest.raises(ConfigError):
        check_not_finished(tmp_path, overwrite=False)


def test_check_not_finished_overwrite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    results.write_text("{}")
    check_not_finished(tmp_path, overwrite=True)
    set_env(monkeypatch, SLURM_RESTART_COUNT=2)
    check_not_finished(tmp_path, overwrite=True)
    assert results.read_text() == "{}"


# --- tlbench.distributed.environment.check_split_sizes ---


def test_split_smaller_than_the_processes_is_refused() -> None:
    env.check_split_sizes({"train": 21, "test": 9}, devices=4, num_nodes=2)
    env.check_split_sizes({"train": 1}, devices="auto", num_nodes=1)  # unknown count: not checked
    with pytest.raises(ConfigError, match=r"'test': 3.*8: trainer.devices=4 x trainer.num_nodes=2"):
        env.check_split_sizes({"train": 21, "test": 3}, devices=4, num_nodes=2)


# --- tlbench.distributed.requeue ---


def test_sigusr1_during_the_classifier_fit_requeues_the_array_task(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from tlbench.distributed import requeue

    calls: list[list[str]] = []
    monkeypatch.setattr(requeue.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    set_env(monkeypatch, SLURM_NTASKS=1, SLURM_JOB_ID=80, SLURM_ARRAY_JOB_ID=77, SLURM_ARRAY_TASK_ID=3)
    before = signal.getsignal(signal.SIGUSR1)
    with requeue.requeue_on_sigusr1("lightning"):
        os.kill(os.getpid(), signal.SIGUSR1)
    assert calls == [["scontrol", "requeue", "77_3"]]
    assert signal.getsignal(signal.SIGUSR1) == before  # restored for Lightning's own handler
    with requeue.requeue_on_sigusr1("submitit"):  # submitit owns requeueing: nothing installed
        assert signal.getsignal(signal.SIGUSR1) == before
