"""A real one-node Slurm cluster on this machine, for the `slurm` tests (and by hand:
`python tests/slurm_cluster.py start|stop`).

Installs Debian's slurm-wlm and munge when missing (needs root and the package registry), starts
munged as user munge, writes a slurm.conf for this host (declared as a 160-thread node with 4 GPUs), starts slurmctld
and slurmd, and waits until the node is idle. `stop()` ends the daemons it started.
"""

from __future__ import annotations

import os
import shutil
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


_started_munge = False  # munged started by start(): stop() ends it too; one that was running stays


def _start_munge() -> None:
    global _started_munge
    if _sh("pgrep", "-x", "munged", check=False).returncode == 0:
        return
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        _sh("mungekey", "-c", "-f", "-k", str(key))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
    for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    _sh("runuser", "-u", "munge", "--", "munged")
    _started_munge = True


def _stop_daemons() -> None:
    for daemon in ("slurmd", "slurmctld"):
        _sh("pkill", "-x", daemon, check=False)
    for _ in range(50):
        if _sh("pgrep", "-x", "slurmctld|slurmd", check=False).returncode != 0:
            return
        time.sleep(0.2)


def start(timeout: float = 60.0) -> None:
    install()
    _start_munge()
    _stop_daemons()
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
    global _started_munge
    _sh("scancel", "--full", "-u", "root", check=False)
    _stop_daemons()
    if _started_munge:
        _sh("pkill", "-x", "munged", check=False)
        _started_munge = False


if __name__ == "__main__":
    {"start": start, "stop": stop}[sys.argv[1]]()
