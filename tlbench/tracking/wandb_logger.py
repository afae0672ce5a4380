"""logger=wandb: a Lightning WandbLogger whose mode, identity and files suit HPC jobs.

- Online only when asked and possible: offline when logger.offline=true, when no API key is found
  (WANDB_API_KEY or ~/.netrc), or when the W&B host cannot be reached within a few seconds. The
  choice is made once, before wandb.init, which is never retried (a failed online init followed
  by an offline one hangs too). Offline runs are uploaded later with `wandb sync <run dir>/wandb/`.
- Files go to the run directory (<run dir>/wandb/).
- The run id is stored in <run dir>/wandb_run_id and reused with resume="allow", so a requeued job
  continues the same W&B run instead of starting a new one.
- group: the sweep (its folder name) for multirun jobs; job_type: the strategy; name: the job's
  overrides; tags: dataset, model, strategy. The resolved config is given to wandb.init once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:  # Lightning (and torch) load only when a W&B logger is built: tlbench-report reads choose_mode
    from pytorch_lightning.loggers import WandbLogger

log = logging.getLogger(__name__)

RUN_ID_FILE = "wandb_run_id"
REACH_TIMEOUT_S = 3.0


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import netrc

        host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def reachable(timeout: float = REACH_TIMEOUT_S) -> bool:
    """A TCP connection to the W&B host within `timeout` (DNS included, in a thread: getaddrinfo
    has no timeout of its own)."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    outcome: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
            outcome.append(True)
        except OSError:
            outcome.append(False)

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(outcome and outcome[0])


def choose_mode(offline: bool) -> tuple[str, str]:
    """("online" | "offline", why)."""
    if offline or os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
        return "offline", "asked for (logger.offline=true or WANDB_MODE=offline)"
    if not has_credentials():
        return "offline", "no W&B API key (WANDB_API_KEY or ~/.netrc from `wandb login`)"
    if not reachable():
        return "offline", f"the W&B server did not answer within {REACH_TIMEOUT_S:.0f} s (no network on this node?)"
    return "online", "credentials and network available"


def persistent_run_id(run_dir: Path) -> str:
    """The W&B run id of this run directory: created once, read back after a requeue."""
    path = run_dir / RUN_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    import secrets

    run_id = secrets.token_hex(4)  # W&B ids: lowercase letters and digits
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def make_wandb_logger(
    run_dir: str,
    project: str = "tlbench",
    entity: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    name: str | None = None,
    tags: list[str] | None = None,
    offline: bool = False,
    run_config: dict[str, Any] | None = None,
) -> WandbLogger:
    from pytorch_lightning.loggers import WandbLogger
    from pytorch_lightning.utilities import rank_zero_only

    folder = Path(run_dir)
    if rank_zero_only.rank != 0:  # W&B runs on rank 0 only; the others get Lightning's no-op
        return WandbLogger(project=project, save_dir=str(folder), offline=True)
    group, name = group or _sweep_group(), name or _overrides_name()
    mode, why = choose_mode(offline)
    if mode == "offline" and not offline and os.environ.get("WANDB_MODE") not in ("offline", "dryrun"):
        log.warning("W&B runs offline: %s. Upload later with `wandb sync %s`", why, folder / "wandb")
    else:
        log.info("W&B %s: %s", mode, why)
    return WandbLogger(
        project=project,
        entity=entity,
        group=group,
        job_type=job_type,
        name=name,
        tags=[str(t) for t in tags or []],
        save_dir=str(folder),
        id=persistent_run_id(folder),
        resume="allow",
        offline=mode == "offline",
        config=run_config,
        settings={"init_timeout": 300},  # many jobs starting at once on a slow file system
    )


def _sweep_group() -> str | None:
    """A multirun's jobs share a group: the sweep folder's name."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"sweep-{Path(HydraConfig.get().sweep.dir).name}"
    return None


def _overrides_name() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return HydraConfig.get().job.override_dirname or "defaults"
    return None


def finish() -> None:
    """End the W&B run of this job (if any), so the next job of a multirun starts its own."""
    import sys

    if "wandb" not in sys.modules:
        return
    import wandb

    if wandb.run is not None:
        wandb.finish()
