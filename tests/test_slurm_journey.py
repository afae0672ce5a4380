"""slurm/README.md followed as a user types it. Without Slurm: `tlbench-report` with no path reads
$TLBENCH_OUTPUT_DIR (else outputs/), a path that does not exist is an error naming where runs go,
and the README's by-hand snippet and log names match what the templates do. On the test cluster
(tests/slurm_cluster.py): a copied site file, sourced in the login shell and nothing exported by
hand, is the one plain `sbatch` and slurm/submit.sh jobs use and name in their logs (in
slurm/logs/); plain sbatch warns that it did not apply TLBENCH_SBATCH_ARGS; `tlbench-report` then
finds the runs; and the test cluster's stop() leaves no Slurm process behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import slurm_cluster
from conftest import colour_folder, read_json

from tlbench.report.cli import main as report_main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "slurm" / "README.md"
TINY = ["model=timm", "model.name=resnet18", "model.pretrained=false"]


def write_result(folder: Path, strategy: str, top1: float) -> Path:
    folder.mkdir(parents=True)
    record = {
        "dataset": "knots",
        "model": "vgg16",
        "strategy": strategy,
        "seed": 0,
        "headline_metric": "top1",
        "metrics": {"test": {"top1": top1, "mean_per_class": top1}},
        "config": {"dataset": {"name": "knots"}},
    }
    (folder / "results.json").write_text(json.dumps(record))
    return folder


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A TLBENCH_OUTPUT_DIR with a run, a multirun point and a feature cache."""
    out = tmp_path / "shared"
    write_result(out / "runs" / "slurm123_knots_vgg16_fne", "fne", 0.8)
    write_result(out / "multiruns" / "2026-01-01_00-00-00" / "0", "last_layer", 0.7)
    (out / "cache" / "features").mkdir(parents=True)
    return out


# --- tlbench-report's paths (no Slurm) ---


def test_report_without_paths_reads_the_output_dir(shared, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TLBENCH_OUTPUT_DIR", str(shared))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert report_main([]) == 0
    out = capsys.readouterr()
    assert f"reading {shared / 'runs'}, {shared / 'multiruns'} (TLBENCH_OUTPUT_DIR={shared})" in out.err
    assert "2 runs" in out.out and "| fne |" in out.out and "| last_layer |" in out.out
    assert (shared / "report" / "report.md").is_file()  # beside the runs, not in the current folder
    assert not (elsewhere / "outputs").exists()


def test_report_without_paths_or_output_dir_reads_outputs(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TLBENCH_OUTPUT_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    write_result(tmp_path / "outputs" / "runs" / "2026-01-01_00-00-00_knots", "fne", 0.8)
    assert report_main([]) == 0
    out = capsys.readouterr()
    assert "reading outputs/runs (TLBENCH_OUTPUT_DIR is not set" in out.err and "1 runs" in out.out
    assert (tmp_path / "outputs" / "report" / "report.md").is_file()


def test_report_on_a_missing_path_says_where_runs_are(shared, tmp_path, monkeypatch, capsys):
    """§5's old command after §1's TLBENCH_OUTPUT_DIR moved the runs."""
    monkeypatch.setenv("TLBENCH_OUTPUT_DIR", str(shared))
    monkeypatch.chdir(tmp_path)
    assert report_main(["outputs/runs", "outputs/multiruns", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "outputs/runs, outputs/multiruns does not exist" in err
    assert f"{shared / 'runs'} and Hydra multiruns to {shared / 'multiruns'} (TLBENCH_OUTPUT_DIR={shared})" in err
    assert "tlbench-report with no path" in err

    monkeypatch.delenv("TLBENCH_OUTPUT_DIR")
    assert report_main([]) == 2  # no outputs/ here either
    err = capsys.readouterr().err
    assert "neither outputs/runs nor outputs/multiruns exists (TLBENCH_OUTPUT_DIR is not set" in err
    assert "`source` the slurm/ site file your jobs used" in err


def test_readme_by_hand_snippet_reads_the_output_dir(shared, tmp_path):
    (snippet,) = re.findall(r"python - <<'PY'\n(.*?)\nPY\n", README.read_text(), re.S)
    env = {**os.environ, "TLBENCH_OUTPUT_DIR": str(shared)}
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and "80.00" in proc.stdout and "70.00" in proc.stdout
    assert str(shared / "runs" / "slurm123_knots_vgg16_fne") in proc.stdout


def test_readme_names_the_logs_the_templates_write():
    text = README.read_text()
    for template in sorted((REPO / "slurm").glob("*.sbatch")):
        script = template.read_text()
        (name,) = re.findall(r"^#SBATCH --job-name=(\S+)", script, re.M)
        (out,) = re.findall(r"^#SBATCH --output=(\S+)", script, re.M)
        shown = out.replace("%x", name).replace("%j", "<job id>").replace("%A", "<array job id>")
        shown = shown.replace("%a", "<task>")
        assert shown.startswith("slurm/logs/")
        assert shown.split("/")[-1] in text, (template.name, shown)  # §3 names each log
        assert shown in script, (template.name, shown)  # and so does the template's header
    assert (REPO / "slurm" / "logs" / ".gitkeep").is_file()  # the folder exists in a fresh checkout
    ignored = subprocess.run(["git", "check-ignore", "-q", "slurm/logs/tlbench-1.out"], cwd=REPO)
    assert ignored.returncode == 0


# --- on the test cluster ---


@pytest.fixture(scope="module")
def cluster():
    slurm_cluster.start()
    yield
    slurm_cluster.stop()


def login_shell(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """bash -c SCRIPT in a login shell that has no tlbench or sbatch variable set by hand (the venv's
    scripts on PATH, as after activating it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TLBENCH_", "SBATCH_", "SLURM_"))}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def wait(job: str, timeout: float = 300) -> str:
    """Until the job has ended; its final `scontrol show job` record."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
            return subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True).stdout
        time.sleep(1)
    subprocess.run(["scancel", job])
    raise AssertionError(f"job {job} still queued after {timeout:.0f} s")


def copied_site(tmp_path: Path) -> tuple[Path, Path]:
    """slurm/site.sh copied out of the checkout and edited as §1 says; returns (site, output dir)."""
    shared = tmp_path / "shared"
    edits = {
        'TLBENCH_PARTITION=""': 'TLBENCH_PARTITION="debug"',
        'TLBENCH_TIME=""': 'TLBENCH_TIME="00:15:00"',
        'TLBENCH_SBATCH_ARGS=""': 'TLBENCH_SBATCH_ARGS="--gres=none --ntasks-per-node=1 --cpus-per-task=1"',
        'TLBENCH_PYTHON="${TLBENCH_PYTHON:-$TLBENCH_HOME/.venv/bin/python}"': (
            f'TLBENCH_PYTHON="{sys.executable}"; echo "site_setup ran"'
        ),
        'export TLBENCH_OUTPUT_DIR="${TLBENCH_OUTPUT_DIR:-${TLBENCH_HOME:+$TLBENCH_HOME/outputs}}"': (
            f'export TLBENCH_OUTPUT_DIR="{shared}"'
        ),
    }
    text = (REPO / "slurm" / "site.sh").read_text()
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    site = tmp_path / "home" / "tlbench-site.sh"
    site.parent.mkdir()
    site.write_text(text)
    return site, shared


@pytest.mark.slurm
@pytest.mark.slow
def test_readme_journey_with_a_copied_site_file(cluster, tmp_path):
    site, shared = copied_site(tmp_path)
    images = colour_folder(tmp_path / "images", train=2, test=1)
    logs = []
    try:
        # §2, plain sbatch after `source`-ing the copy: the job uses the copy, not slurm/site.sh, and
        # says that TLBENCH_SBATCH_ARGS were not applied (an array task with no sweep file stops at once)
        proc = login_shell(f"source {site} && sbatch --parsable --array=0 slurm/tlbench_array.sbatch", REPO)
        assert proc.returncode == 0, proc.stderr
        array_job = proc.stdout.strip()
        wait(array_job, timeout=60)
        log = REPO / "slurm" / "logs" / f"tlbench-array-{array_job}_0.out"  # §3's array log name
        logs.append(log)
        text = log.read_text()
        assert f"tlbench: site file: {site} (TLBENCH_SITE)" in text
        assert "site_setup ran" in text
        assert "TLBENCH_SBATCH_ARGS=" in text and "plain sbatch does not read it" in text
        assert "10 CPU(s) per task here" in text  # the template's, not the site's 1
        assert "no sweep file" in text

        # §2, slurm/submit.sh from the same shell: the copy again, its TLBENCH_SBATCH_ARGS applied
        overrides = f"dataset=imagefolder dataset.root={images} {' '.join(TINY)} strategy=last_layer"
        proc = login_shell(f"source {site} && slurm/submit.sh --parsable slurm/tlbench_1node.sbatch {overrides}", REPO)
        assert proc.returncode == 0, proc.stderr
        assert f"site file {site}" in proc.stderr
        job = proc.stdout.strip()
        state = wait(job)
        log = REPO / "slurm" / "logs" / f"tlbench-{job}.out"  # §3's log name
        logs.append(log)
        text = log.read_text()
        assert "JobState=COMPLETED" in state, text[-3000:]
        assert f"tlbench: site file: {site} (TLBENCH_SITE)" in text and "site_setup ran" in text
        assert "warning" not in text
        assert "1 node(s) x 1 task(s), 1 CPU(s) per task" in text
        (run,) = (shared / "runs").glob(f"slurm{job}_*")  # §3's run directory
        assert read_json(run / "results.json")["strategy"] == "last_layer"

        # §5 from another folder of the login node, after `source`-ing the site file
        elsewhere = tmp_path / "login"
        elsewhere.mkdir()
        proc = login_shell(f"source {site} && tlbench-report", elsewhere)
        assert proc.returncode == 0, proc.stderr
        assert f"reading {shared / 'runs'}" in proc.stderr and "1 runs" in proc.stdout
        assert (shared / "report" / "report.md").is_file()
        proc = login_shell(f"source {site} && tlbench-report outputs/runs outputs/multiruns", elsewhere)
        assert proc.returncode == 2 and f"tlbench writes runs to {shared / 'runs'}" in proc.stderr
    finally:
        for log in logs:
            log.unlink(missing_ok=True)


@pytest.mark.slurm
@pytest.mark.slow
def test_stop_ends_every_process_the_cluster_started(tmp_path):
    """A job step still running when the tests end: stop() cancels it and leaves no slurmctld,
    slurmd, slurmstepd or job process (nor the munged it started) behind."""
    slurm_cluster.start()
    try:
        job = subprocess.run(
            ["sbatch", "--parsable", "--gres=none", "--ntasks=1", "--cpus-per-task=1", f"--output={tmp_path}/%j.out",
             "--wrap", "srun sleep 600"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        deadline = time.monotonic() + 60
        sleepers: list[int] = []
        while time.monotonic() < deadline and not sleepers:
            under_steps = slurm_cluster._with_descendants(slurm_cluster.pids("slurmstepd"))
            sleepers = [p for p in under_steps if p in slurm_cluster.pids("sleep")]
            time.sleep(0.5)
        assert sleepers, f"job {job} did not start its step"
        assert len(slurm_cluster.pids("slurmstepd")) >= 2  # the batch script's and the srun step's
    finally:
        slurm_cluster.stop()
    assert slurm_cluster.leftovers() == {}
    assert not [p for p in sleepers if slurm_cluster._alive(p)]
    gone = subprocess.run(["squeue"], capture_output=True, text=True)
    assert gone.returncode != 0  # no controller answers
