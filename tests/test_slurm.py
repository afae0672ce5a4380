"""The slurm/ templates and the submitit launcher profiles on a real one-node Slurm cluster
(tests/slurm_cluster.py installs and starts it): DDP extraction and fine-tuning with 2 CPU ranks
(gloo), a job array, a Hydra multirun submitted through submitit, and a requeued fine-tuning job.
Jobs are submitted with slurm/README.md's CPU-node options (--gres=none --ntasks-per-node=N
--cpus-per-task=M); test_slurm_journey.py follows the README's steps as a user types them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import slurm_cluster
import torch
from conftest import cache_entries, colour_folder, read_json, run_cli

from tlbench.embedding.store import read_entry

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((REPO / "slurm").glob("*.sbatch"))
TINY = ["model=timm", "model.name=resnet18", "model.pretrained=false"]
CPU_NODE = ["--gres=none", "--ntasks-per-node=2", "--cpus-per-task=1"]  # slurm/README.md, CPU nodes

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    slurm_cluster.start()
    yield
    slurm_cluster.stop()


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory) -> Path:
    """21 train and 9 test images: neither split divides evenly over 2 ranks."""
    return colour_folder(tmp_path_factory.mktemp("odd") / "folder", train=7, test=3)


def job_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TLBENCH_HOME": str(REPO),
        "TLBENCH_PYTHON": sys.executable,
        "TLBENCH_OUTPUT_DIR": str(tmp_path / "outputs"),
        "TLBENCH_CACHE_DIR": str(tmp_path / "cache"),
        **extra,
    }


def submit(tmp_path: Path, template: str, *args: str, sbatch: tuple[str, ...] = (), env=None) -> str:
    """sbatch a template from the repository root with 2 CPU tasks and no GPU (the README's options
    for CPU nodes); returns the job id."""
    cmd = [
        "sbatch",
        "--parsable",
        *CPU_NODE,
        "--time=15",
        f"--output={tmp_path}/%x-%j.out",
        *sbatch,
        str(REPO / "slurm" / template),
        *args,
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env or job_env(tmp_path), capture_output=True, text=True, check=True)
    return proc.stdout.strip().split(";")[0]


def job_state(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def wait(job: str, timeout: float = 300) -> dict[str, str]:
    """Until the job (every array task) has ended; returns its final scontrol record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip()
        if not queued:
            return job_state(job)
        time.sleep(1)
    subprocess.run(["scancel", job])
    raise AssertionError(f"job {job} still queued after {timeout:.0f} s: {job_state(job)}")


def output(tmp_path: Path, job: str) -> str:
    return "\n".join(p.read_text() for p in sorted(tmp_path.glob(f"*-{job}*.out")))


def run_dir(tmp_path: Path, job: str) -> Path:
    (found,) = (tmp_path / "outputs" / "runs").glob(f"slurm{job}_*")
    return found


def test_every_template_is_accepted_by_sbatch_test_only(cluster, tmp_path):
    assert {t.name for t in TEMPLATES} >= {"tlbench_1node.sbatch", "tlbench_multinode.sbatch", "tlbench_array.sbatch"}
    for template in TEMPLATES:
        # exactly as written: 4 GPUs (declared by the test cluster), their task layout and signal
        array = ["--array=0-2"] if "array" in template.name else []
        nodes = ["--nodes=1"] if "multinode" in template.name else []  # the test cluster has one node
        proc = subprocess.run(
            ["sbatch", "--test-only", *array, *nodes, str(template)], cwd=REPO, capture_output=True, text=True
        )
        assert proc.returncode == 0, f"{template.name}: {proc.stderr}"
        assert "to start at" in proc.stderr
        text = template.read_text()
        for directive in ("--gres=gpu:4", "--ntasks-per-node=4", "--signal=SIGUSR1@90", "--cpus-per-task="):
            assert f"#SBATCH {directive}" in text, (template.name, directive)
        assert "#SBATCH --output=slurm/logs/%x-" in text  # not the repository root
        # and on CPU nodes, with the README's options on the command line
        cpu = ["sbatch", "--test-only", *array, *nodes, *CPU_NODE, str(template)]
        proc = subprocess.run(cpu, cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0 and "using 2 processors" in proc.stderr, f"{template.name}: {proc.stderr}"


def test_cpu_node_options_replace_the_templates_gpu_lines(cluster, tmp_path):
    """--gres=none --ntasks-per-node --cpus-per-task before the template win over its #SBATCH lines:
    the job asks for no GPU at all; its log goes to slurm/logs/ under the submission folder."""
    (tmp_path / "slurm" / "logs").mkdir(parents=True)
    for template in TEMPLATES:
        array = ["--array=0-1"] if "array" in template.name else []
        nodes = ["--nodes=1"] if "multinode" in template.name else []  # the test cluster has one node
        cmd = ["sbatch", "--parsable", "--hold", *array, *nodes, *CPU_NODE, str(template)]
        job = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
        try:
            state = job_state(job if not array else f"{job}_0")
        finally:
            subprocess.run(["scancel", job])
        assert "gpu" not in state.get("TresPerNode", "") and "gpu" not in state["TRES"], (template.name, state)
        assert (state["NumTasks"], state["CPUs/Task"]) == ("2", "1"), template.name
        assert state["StdOut"].startswith(f"{tmp_path}/slurm/logs/"), state["StdOut"]
    held = job_state(subprocess.run(["sbatch", "--parsable", "--hold", str(TEMPLATES[0])], cwd=tmp_path,
                                    capture_output=True, text=True, check=True).stdout.strip())  # fmt: skip
    subprocess.run(["scancel", held["JobId"]])
    assert "gpu:4" in held.get("TresPerNode", "")  # as written, the template asks for the 4 GPUs


def test_ddp_extraction_on_two_ranks_equals_one_process(cluster, tmp_path, odd_folder):
    overrides = ["dataset=imagefolder", f"dataset.root={odd_folder}", *TINY]
    job = submit(tmp_path, "tlbench_1node.sbatch", *overrides)
    state = wait(job)
    log = output(tmp_path, job)
    assert state["JobState"] == "COMPLETED", log[-3000:]
    ddp_dir = run_dir(tmp_path, job)
    ddp = read_json(ddp_dir / "results.json")
    assert ddp["provenance"]["slurm"]["ntasks"] == "2" and ddp["world_size"] == 2, log[-3000:]
    assert "21 images on 2 process(es)" in (ddp_dir / "tlbench.log").read_text()
    assert (ddp_dir / "tlbench_rank1.log").is_file()  # rank 1 logs beside rank 0, writes nothing else

    single_tmp = tmp_path / "single"
    single_tmp.mkdir()
    run_cli(single_tmp, *overrides)
    single = read_json(single_tmp / "run" / "results.json")
    assert ddp["metrics"] == single["metrics"]
    assert ddp["split_sizes"] == single["split_sizes"] == {"train": 21, "test": 9}
    for split in ("train", "test"):
        (a,) = [p for p in cache_entries(tmp_path / "cache") if read_json(p / "meta.json")["split"] == split]
        (b,) = [p for p in cache_entries(single_tmp / "cache") if read_json(p / "meta.json")["split"] == split]
        assert a.name == b.name  # the same cache key
        x, y = read_entry(a), read_entry(b)
        assert x.indices.tolist() == list(range(len(x.indices)))  # every image once, in order
        np.testing.assert_array_equal(x.indices, y.indices)
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.features, y.features)
    assert not (ddp_dir / "shards").exists()  # merged and removed

    # again on 2 ranks: rank 0 finds everything cached and tells rank 1, which reads nothing
    again = submit(tmp_path, "tlbench_1node.sbatch", *overrides)
    assert wait(again)["JobState"] == "COMPLETED", output(tmp_path, again)[-3000:]
    rerun = read_json(run_dir(tmp_path, again) / "results.json")
    assert rerun["cache"] == {"train": "hit", "test": "hit"} and rerun["world_size"] == 1
    assert rerun["metrics"] == ddp["metrics"]


def test_ddp_finetuning_on_two_ranks(cluster, tmp_path, odd_folder):
    overrides = ["dataset=imagefolder", f"dataset.root={odd_folder}", *TINY, "strategy=finetune"]
    overrides += ["strategy.epochs=2", "dataset.batch_size=4", "dataset.val_fraction=0.3"]
    job = submit(tmp_path, "tlbench_1node.sbatch", *overrides)
    state = wait(job)
    log = output(tmp_path, job)
    assert state["JobState"] == "COMPLETED", log[-3000:]
    folder = run_dir(tmp_path, job)
    result = read_json(folder / "results.json")
    assert result["world_size"] == 2
    # metrics synced over the ranks, every image counted once (9 and 7 do not split evenly)
    assert result["classifier"]["evaluated_images"] == {"val": 7, "test": 9}
    assert [row["epoch"] for row in result["curve"]] == [0, 1]
    assert log.count("results: ") == 1  # one summary, from rank 0
    checkpoints = sorted(p.name for p in (folder / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2  # best and last, written once


def test_array_job_runs_one_sweep_line_per_task(cluster, tmp_path, odd_folder):
    sweep = tmp_path / "sweep.txt"
    sweep.write_text("# two lines\n\nstrategy=last_layer\n  strategy=fne 'seed=3'\n")
    common = ["dataset=imagefolder", f"dataset.root={odd_folder}", *TINY]
    job = submit(tmp_path, "tlbench_array.sbatch", str(sweep), *common, sbatch=("--array=0-1", "--ntasks-per-node=1"))
    wait(job)
    for task, (strategy, seed) in enumerate((("last_layer", 0), ("fne", 3))):
        state = job_state(f"{job}_{task}")
        assert state["JobState"] == "COMPLETED", output(tmp_path, job)[-3000:]
        (folder,) = (tmp_path / "outputs" / "runs").glob(f"slurm{job}_{task}_*")
        result = read_json(folder / "results.json")
        assert (result["strategy"], result["seed"]) == (strategy, seed)


def test_submitit_multirun_submits_one_job_per_point(cluster, tmp_path, odd_folder, monkeypatch):
    # a site file sourced on the login node (it exports TLBENCH_SITE): its site_setup runs in each job
    site = tmp_path / "site" / "my-site.sh"
    site.parent.mkdir()
    site.write_text(
        'TLBENCH_SITE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"\n'
        "export TLBENCH_SITE\n"
        'site_setup() { echo "site_setup ran in job $SLURM_JOB_ID"; }\n'
    )
    monkeypatch.setenv("TLBENCH_SITE", str(site))
    proc = run_cli(
        tmp_path,
        "-m",
        "hydra/launcher=slurm_cpu",
        "hydra.launcher.partition=debug",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=10",
        "dataset=imagefolder",
        f"dataset.root={odd_folder}",
        *TINY,
        "strategy=last_layer,fne",
        timeout=400,
    )
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    results = {int(p.parent.name): read_json(p) for p in sweep.glob("*/results.json")}
    assert sorted(results) == [0, 1], proc.stderr[-3000:]
    assert {r["strategy"] for r in results.values()} == {"last_layer", "fne"}
    jobs = {r["provenance"]["slurm"]["array_job_id"] for r in results.values()}
    assert len(jobs) == 1  # one submitit array, one task per sweep point
    # submitit owns requeueing inside its jobs: Lightning's handler stays off
    logs = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_log.*"))
    assert "auto-requeueing enabled" not in logs
    assert logs.count(f"tlbench: site file: {site}") == 2, logs[-3000:]  # one per job
    assert logs.count("site_setup ran in job") == 2


def _requeue_and_restart(job: str, timeout: float = 120) -> None:
    """After Lightning's `scontrol requeue` the job waits ~2 minutes (BeginTime): start it now."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = job_state(job)
        if state.get("JobState") == "PENDING":
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job} was not requeued: {job_state(job)}")


def test_requeued_finetuning_resumes_and_matches_an_uninterrupted_run(cluster, tmp_path, odd_folder):
    overrides = ["dataset=imagefolder", f"dataset.root={odd_folder}", "strategy=finetune", "strategy.epochs=5"]
    overrides += ["dataset.batch_size=8", "dataset.val_fraction=0.3"]  # the packaged efficientnet_lite0 at 224 px
    one_task = ("--ntasks-per-node=1",)
    straight = submit(tmp_path, "tlbench_1node.sbatch", *overrides, sbatch=one_task)
    interrupted = submit(tmp_path, "tlbench_1node.sbatch", *overrides, sbatch=one_task)

    # interrupt after the first epoch's checkpoint, mid-training, as the time limit would
    deadline = time.monotonic() + 240
    last = None
    while time.monotonic() < deadline:
        found = list((tmp_path / "outputs" / "runs").glob(f"slurm{interrupted}_*/checkpoints/last.ckpt"))
        if found:
            last = found[0]
            break
        time.sleep(0.2)
    assert last is not None, output(tmp_path, interrupted)[-3000:]
    subprocess.run(["scancel", "--signal=USR1", interrupted], check=True)
    _requeue_and_restart(interrupted)

    for job in (straight, interrupted):
        assert wait(job, timeout=400)["JobState"] == "COMPLETED", output(tmp_path, job)[-3000:]
    log = output(tmp_path, interrupted)
    assert "restart 0" in log and "restart 1" in log  # both attempts in the appended .out file
    a_dir, b_dir = run_dir(tmp_path, straight), run_dir(tmp_path, interrupted)
    a, b = read_json(a_dir / "results.json"), read_json(b_dir / "results.json")
    assert b["provenance"]["slurm"]["restart_count"] == "1"
    assert b["classifier"]["resumed_from"] == str(b_dir / "checkpoints" / "last.ckpt")
    assert a["classifier"]["resumed_from"] is None
    assert list((b_dir / "checkpoints" / "mid_epoch").glob("hpc_ckpt_*.ckpt"))  # kept, not used
    assert [r["epoch"] for r in a["curve"]] == [r["epoch"] for r in b["curve"]] == [0, 1, 2, 3, 4]
    assert a["metrics"] == b["metrics"]
    assert [r["val/top1"] for r in a["curve"]] == [r["val/top1"] for r in b["curve"]]
    wa = torch.load(a_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    wb = torch.load(b_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


# --- bad input ---


def test_template_without_the_site_variables_stops_with_the_fix(cluster, tmp_path):
    empty_site = tmp_path / "site.sh"
    empty_site.write_text("# nothing set\n")
    env = {k: v for k, v in job_env(tmp_path, TLBENCH_SITE=str(empty_site)).items() if k != "TLBENCH_OUTPUT_DIR"}
    job = submit(tmp_path, "tlbench_1node.sbatch", "strategy=fne", env=env)
    state = wait(job, timeout=60)
    assert state["JobState"] == "FAILED" and state["ExitCode"].startswith("2:")
    log = output(tmp_path, job)
    assert "TLBENCH_OUTPUT_DIR is not set" in log and str(empty_site) in log
    assert not (tmp_path / "outputs").exists()


def test_array_template_without_a_sweep_file_stops(cluster, tmp_path):
    job = submit(tmp_path, "tlbench_array.sbatch", sbatch=("--array=0",))
    wait(job, timeout=60)
    assert job_state(f"{job}_0")["JobState"] == "FAILED"
    assert "no sweep file" in output(tmp_path, job)


def test_devices_not_matching_the_allocation_is_refused(cluster, tmp_path, odd_folder):
    job = submit(tmp_path, "tlbench_1node.sbatch", "dataset=imagefolder", f"dataset.root={odd_folder}", *TINY,
                 "trainer.devices=1")  # fmt: skip
    state = wait(job, timeout=120)
    assert state["JobState"] == "FAILED"
    log = output(tmp_path, job)
    assert "trainer.devices=1 but SLURM starts 2 task(s) per node" in log
    assert "Initializing distributed" not in log  # refused before any rank waits for the others


def test_submitit_gpu_profile_runs_each_point_as_a_ddp_job(cluster, tmp_path, odd_folder):
    """The 4-GPU profile, shrunk to 2 tasks for this 2-core machine: each rank runs the Hydra job,
    Lightning takes the ranks from SLURM, and the extraction is merged once."""
    proc = run_cli(
        tmp_path,
        "-m",
        "hydra/launcher=slurm_gpu",
        "hydra.launcher.partition=debug",
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=10",
        "dataset=imagefolder",
        f"dataset.root={odd_folder}",
        *TINY,
        "strategy=fne",
        timeout=400,
    )
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    result = read_json(sweep / "0" / "results.json")
    assert result["world_size"] == 2, proc.stderr[-3000:]
    assert result["provenance"]["slurm"]["ntasks"] == "2"
    assert result["cache"] == {"train": "miss", "test": "miss"}
    assert (sweep / "0" / "tlbench_rank1.log").is_file()
    rank0_log = (sweep / "0" / "tlbench.log").read_text()
    assert "on 2 process(es)" in rank0_log and rank0_log.count("extracting imagefolder/train") == 1


def test_submitit_requeue_resumes_the_sweep_point_from_its_checkpoint(cluster, tmp_path, odd_folder):
    """USR2 (submitit's preemption signal): submitit requeues the job, which reruns the same sweep
    point in the same folder; fine-tuning resumes from last.ckpt instead of starting over."""
    env = {
        **os.environ,
        "TLBENCH_OUTPUT_DIR": str(tmp_path / "outputs"),
        "TLBENCH_CACHE_DIR": str(tmp_path / "cache"),
    }
    args = [
        sys.executable, "-m", "tlbench.cli", "-m",
        "hydra/launcher=slurm_cpu", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.timeout_min=10", "dataset=imagefolder", f"dataset.root={odd_folder}",
        "strategy=finetune", "strategy.epochs=4", "dataset.batch_size=8", "dataset.val_fraction=0.3",
    ]  # fmt: skip
    log = tmp_path / "launcher.log"  # a file, not a pipe: submitit's polling output would fill a pipe
    with log.open("w") as sink:
        launcher = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        checkpoints = None
        while time.monotonic() < deadline and checkpoints is None and launcher.poll() is None:
            found = list((tmp_path / "outputs" / "multiruns").glob("*/0/checkpoints/last.ckpt"))
            checkpoints = found[0].parent if found else None
            time.sleep(0.2)
        assert checkpoints is not None, f"no checkpoint appeared:\n{log.read_text()[-3000:]}"
        job = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()[0]
        subprocess.run(["scancel", "--signal=USR2", job], check=True)
        _requeue_and_restart(job)
        launcher.wait(timeout=400)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, log.read_text()[-3000:]
    folder = checkpoints.parent
    result = read_json(folder / "results.json")
    assert result["provenance"]["slurm"]["restart_count"] == "1"
    assert result["classifier"]["resumed_from"] == str(checkpoints / "last.ckpt")
    assert [row["epoch"] for row in result["curve"]] == [0, 1, 2, 3]
    logs = "".join(p.read_text() for p in folder.parent.glob(".submitit/*/*_log.*"))
    assert "auto-requeueing enabled" not in logs  # submitit's requeue only (its log keeps the last attempt)


def test_array_line_that_does_not_parse_stops_instead_of_running_the_defaults(cluster, tmp_path):
    sweep = tmp_path / "sweep.txt"
    sweep.write_text("dataset=digits 'strategy=fne\n")  # unbalanced quote
    job = submit(tmp_path, "tlbench_array.sbatch", str(sweep), sbatch=("--array=0", "--ntasks-per-node=1"))
    wait(job, timeout=60)
    assert job_state(f"{job}_0")["JobState"] == "FAILED"
    assert "cannot split line 0" in output(tmp_path, job)
    assert not (tmp_path / "outputs").exists()  # no run started with the default config
