"""A real one-node Slurm cluster on this machine, for the `slurm` tests (and by hand:
`python tests/slurm_cluster.py start|stop`).

Installs Debian's slurm-wlm and munge when missing (needs root and the package registry), starts
munged as user munge, writes a slurm.conf for this host (declared as a 160-thread node with 4 GPUs), starts slurmctld
and slurmd, and waits until the node is idle. `stop()` cancels every job and waits for them, then
ends slurmd, slurmctld, any slurmstepd left (with the processes under it) and munged when start()
started it: nothing of the cluster outlives it (`leftovers()` lists what would).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

STATE = Path(os.environ.get("TLBENCH_SLURM_STATE", "/tmp/tlbench-slurm"))
CONF = Path("/etc/slurm/slurm.conf")
PARTITION = "debug"
GPUS = 4
CPUS = 160


def _sh(*cmd: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kwargs)


def installed() -> bool:
    return all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged"))


def install() -> None:
    if installed():
        return
    if os.geteuid() != 0:
        raise RuntimeError("Slurm is not installed and this is not root: apt-get install -y slurm-wlm munge")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _sh("apt-get", "update", env=env)
    _sh("apt-get", "install", "-y", "--no-install-recommends", "slurm-wlm", "munge", env=env)


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 - 1024
    return 2048


def write_conf() -> None:
    host = socket.gethostname().split(".")[0]
    for sub in ("spool", "state", "log"):
        (STATE / sub).mkdir(parents=True, exist_ok=True)
    CONF.parent.mkdir(parents=True, exist_ok=True)
    # slurmd counts GPUs by their device files: character devices (copies of /dev/null) stand in.
    for i in range(GPUS):
        device = STATE / f"gpu{i}"
        if not device.exists():
            os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (CONF.parent / "gres.conf").write_text(f"NodeName={host} Name=gpu File={STATE}/gpu[0-{GPUS - 1}]\n")
    CONF.write_text(
        "\n".join(
            [
                "ClusterName=tlbench",
                f"SlurmctldHost={host}",
                "AuthType=auth/munge",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "ReturnToService=2",
                "SlurmUser=root",
                "MpiDefault=none",
                "JobAcctGatherType=jobacct_gather/none",
                # Four GPUs (stand-in device files below), so the templates' --gres=gpu:4 is accepted as
                # written; torch finds no CUDA device here and the ranks run on the CPU (gloo).
                "GresTypes=gpu",
                "SchedulerParameters=sched_interval=1",
                # Job ids that differ from the last session's: Lightning derives the DDP port from
                # the id's last 4 digits, and a reused id could meet its predecessor's port in TIME_WAIT.
                f"FirstJobId={10_000 + int(time.time()) % 80_000}",
                # The node is declared like the target cluster's (160 hardware threads, 4 GPUs), so
                # `sbatch --test-only` judges the templates as written; slurmd trusts this config.
                "SlurmdParameters=config_overrides",
                "MinJobAge=600",
                "KillWait=10",
                f"SlurmctldPidFile={STATE}/slurmctld.pid",
                f"SlurmdPidFile={STATE}/slurmd.pid",
                f"SlurmdSpoolDir={STATE}/spool",
                f"StateSaveLocation={STATE}/state",
                f"SlurmctldLogFile={STATE}/log/slurmctld.log",
                f"SlurmdLogFile={STATE}/log/slurmd.log",
                f"NodeName={host} CPUs={max(os.cpu_count() or 1, CPUS)} RealMemory={_memory_mb()} "
                f"Gres=gpu:{GPUS} State=UNKNOWN",
                f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )


# munged started by start(): stop() ends it too (its pids are kept in a file, so that
# `python tests/slurm_cluster.py stop` ends the one `... start` started); one that was running stays
MUNGED_PIDS = STATE / "munged-started-by-tests.pid"
DAEMONS = ("slurmctld", "slurmd", "slurmstepd")


def _processes() -> dict[int, tuple[str, int]]:
    """Every process: pid -> (command name, parent pid), from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split at the last ")"
        name = stat_line[stat_line.index("(") + 1 : stat_line.rindex(")")]
        found[int(entry.name)] = (name, int(stat_line[stat_line.rindex(")") + 2 :].split()[1]))
    return found


def pids(*names: str) -> list[int]:
    """Running processes with one of these command names (like pgrep -x, zombies left out: a munged
    killed by stop() but not yet reaped must not pass for a running one at the next start())."""
    return sorted(pid for pid, (name, _) in _processes().items() if name in names and _alive(pid))


def _with_descendants(roots: list[int]) -> list[int]:
    procs = _processes()
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in found or pid not in procs:
            continue
        found.add(pid)
        todo.extend(child for child, (_, parent) in procs.items() if parent == pid)
    return sorted(found)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; its parent has not collected it yet


def _end(targets: list[int], timeout: float = 15.0) -> None:
    """SIGTERM these processes, wait up to `timeout` s, then SIGKILL those still running."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(_alive(p) for p in targets):
            time.sleep(0.2)
        targets = [p for p in targets if _alive(p)]
        if not targets:
            return


def leftovers() -> dict[str, list[int]]:
    """Slurm processes still running, and the munged start() started: empty after stop()."""
    found = {name: [pid for pid in pids(name) if _alive(pid)] for name in DAEMONS}
    found["munged"] = [pid for pid in _our_munged() if _alive(pid)]
    return {name: found_pids for name, found_pids in found.items() if found_pids}


def _our_munged() -> list[int]:
    """The munged that start() started, if it still runs (a pid reused by another program is not it)."""
    saved = {int(pid) for pid in MUNGED_PIDS.read_text().split()} if MUNGED_PIDS.exists() else set()
    return [pid for pid in pids("munged") if pid in saved]


def _start_munge() -> None:
    if pids("munged"):
        return
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        _sh("mungekey", "-c", "-f", "-k", str(key))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    _sh("runuser", "-u", "munge", "--", "munged")  # forks into the background and returns
    STATE.mkdir(parents=True, exist_ok=True)
    MUNGED_PIDS.write_text(" ".join(map(str, pids("munged"))))


def _cancel_jobs(timeout: float = 60.0) -> None:
    """scancel every job, and wait until the controller lists none (their steps have ended)."""
    if not pids("slurmctld"):
        return
    jobs = _sh("squeue", "-h", "-o", "%i", check=False).stdout.split()
    if jobs:
        _sh("scancel", *jobs, check=False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queued = _sh("squeue", "-h", "-o", "%i", check=False)
        if queued.returncode == 0 and not queued.stdout.strip():
            return
        time.sleep(0.5)


def _stop_slurm() -> None:
    _cancel_jobs()
    _end(pids("slurmd"))
    _end(pids("slurmctld"))
    # a job step whose slurmd is gone: its slurmstepd and the job's processes under it
    _end(_with_descendants(pids("slurmstepd")), timeout=5.0)


def start(timeout: float = 60.0) -> None:
    install()
    _start_munge()
    _stop_slurm()  # a cluster left by an earlier session
    for sub in ("state", "spool"):  # no job of an earlier cluster comes back
        shutil.rmtree(STATE / sub, ignore_errors=True)
    write_conf()
    _sh("slurmctld", "-i")
    _sh("slurmd")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _sh("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
        if state == "idle":
            return
        time.sleep(0.5)
    log = (STATE / "log" / "slurmctld.log").read_text()[-2000:] if (STATE / "log" / "slurmctld.log").exists() else ""
    raise RuntimeError(f"the Slurm node did not become idle in {timeout:.0f} s; sinfo says {state!r}\n{log}")


def stop() -> None:
    """Cancel every job and wait for it, then end every Slurm process, and munged if start() started it."""
    _stop_slurm()
    _end(_our_munged())
    MUNGED_PIDS.unlink(missing_ok=True)


if __name__ == "__main__":
    {"start": start, "stop": stop}[sys.argv[1]]()
