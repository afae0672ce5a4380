"""Thin Hydra entry point: `tlbench [overrides]` composes conf/ and calls run(cfg)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from tlbench.distributed.environment import process_rank

log = logging.getLogger("tlbench")


def config_dir() -> Path:
    """The config tree: inside the package for a wheel install, the repository's conf/ otherwise."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise SystemExit(f"tlbench: cannot find the config tree (conf/config.yaml) next to {here}; reinstall tlbench")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _main(cfg: DictConfig) -> float | None:
    from tlbench.errors import RunFinished, TlbenchError
    from tlbench.results import print_summary
    from tlbench.sweep import FAILURE_FILE, write_failure

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    if process_rank() > 0:
        _separate_rank_log(run_dir.resolve(), process_rank())
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun:  # a requeued or repeated job starts without its earlier failure record
        (run_dir / FAILURE_FILE).unlink(missing_ok=True)
    try:
        result = _run_and_finish(cfg, run_dir)
    except RunFinished as done:
        log.info("%s", done)
        print(f"tlbench: {done}", file=sys.stderr)
        return None
    except TlbenchError as exc:
        log.error("%s", exc)
        print(f"tlbench: error: {exc}", file=sys.stderr)
        if multirun:  # one bad sweep point: record it, go on with the others
            write_failure(run_dir, exc)
            return None
        raise SystemExit(2) from None
    except Exception as exc:
        if not multirun:
            raise
        log.exception("job failed: %s", exc)  # a bug, not bad input: keep the traceback
        write_failure(run_dir, exc)
        return None
    if result is None:  # ranks other than 0 under DDP: rank 0 reports
        return None
    print_summary(result)
    return result.headline


def _run_and_finish(cfg: DictConfig, run_dir: Path):
    """run(), then end this job's W&B run whatever happened: in a multirun the next job must not
    log into it."""
    with _wandb_import_deferred():
        from tlbench.run import run
    from tlbench.tracking.wandb_logger import finish

    try:
        return run(cfg, run_dir)
    finally:
        finish()


def _leave_process_group() -> None:
    """Destroy the DDP process group Lightning opened, once the process's jobs are over (the jobs of a
    multirun share it, as Lightning reuses an initialized group). Lightning leaves a gloo group to the
    interpreter's exit (it registers a destroy at exit for NCCL only), where gloo's threads were
    destroyed still joinable: a rank that finished first aborted ("terminate called without an active
    exception"), which failed the whole srun step after rank 0 had written its results. Every
    collective is over by then, and destroying a gloo group is local to this process."""
    dist = sys.modules.get("torch.distributed")  # not imported: no group (and `--help` stays fast)
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# Keys that became config groups: an override of the old key gets the new spelling, not Hydra's
# "Key 'name' is not in struct".
BECAME_GROUPS = {"strategy.optimizer.name": "strategy/optimizer", "strategy.lr_schedule.name": "strategy/lr_schedule"}


def _check_renamed_overrides(argv: list[str]) -> None:
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        group = BECAME_GROUPS.get(key)
        if group is not None:
            choices = sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))
            print(
                f"tlbench: error: {key} is now the config group {group}: use {group}={value or '...'} "
                f"(choices: {', '.join(choices)})",
                file=sys.stderr,
            )
            raise SystemExit(2)


def main() -> None:
    _check_renamed_overrides(sys.argv[1:])
    rank = process_rank()
    if rank > 0 and not {"-m", "--multirun"} & set(sys.argv):
        # Under srun every rank runs the CLI: only rank 0 writes .hydra/ in the (SLURM-job-keyed)
        # run directory.
        sys.argv.append("hydra.output_subdir=null")
    try:
        _main()
    except BrokenPipeError:  # `tlbench --help | head`: the reader left; end quietly as cat or ls do
        _quiet_broken_pipe()
    finally:
        _leave_process_group()
    from tlbench.sweep import failed_jobs

    if failed_jobs:  # a multirun whose summary listed failures
        raise SystemExit(1)


def program() -> None:
    """The `tlbench` command (and python -m tlbench.cli): main(), then the exit without teardown.
    A program that calls main() itself and goes on afterwards keeps the ordinary exit."""
    try:
        main()
    except SystemExit as exc:
        if exc.code not in (None, 0, 1):
            raise
        _exit_without_teardown(exc.code or 0)
    _exit_without_teardown(0)


def _exit_without_teardown(code: int) -> NoReturn:
    """End the process as a normal exit would, less the interpreter's teardown: freeing every module
    that torch, torchvision, timm and Lightning loaded (about 10,000 of them) takes about a quarter as
    long as importing them did, 1-2 s of a cached rerun, and nothing of it is needed. What an exit does
    that matters still happens: the atexit handlers run (logging flushes and closes the run's log file,
    W&B, multiprocessing and weakref finalizers), then stdout and stderr are flushed. Where other
    threads are still running, or a torch.distributed process group is still up, the ordinary exit
    runs instead."""
    import atexit

    dist = sys.modules.get("torch.distributed")
    busy = any(t is not threading.main_thread() and not t.daemon and t.is_alive() for t in threading.enumerate())
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if busy or run_exitfuncs is None or (dist is not None and dist.is_available() and dist.is_initialized()):
        raise SystemExit(code)
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


@contextlib.contextmanager
def _wandb_import_deferred() -> Iterator[None]:
    """timm imports wandb, when installed, for a helper tlbench never calls (timm.utils.summary);
    that is about a third of timm's import time. While tlbench.run and what it imports load, `import
    wandb` fails as it would if wandb were not installed, and timm goes without; wandb itself loads as
    before when logger=wandb builds its logger."""
    if "wandb" in sys.modules or "timm" in sys.modules:
        yield
        return
    sys.modules["wandb"] = None  # type: ignore[assignment]  # `import wandb` raises ImportError
    try:
        yield
    finally:
        if "wandb" in sys.modules and sys.modules["wandb"] is None:
            del sys.modules["wandb"]


def _quiet_broken_pipe() -> None:
    """Exit with the shell's code for SIGPIPE; stdout points at /dev/null so that the interpreter's
    final flush of what is still buffered does not print a second BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise SystemExit(141)


def _separate_rank_log(run_dir: Path, rank: int) -> None:
    """Ranks other than 0 log to tlbench_rank<r>.log instead of rank 0's tlbench.log (also in
    submitit jobs, where Hydra set up logging before tlbench runs)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).resolve().parent == run_dir:
            root.removeHandler(handler)
            handler.close()
            own = logging.FileHandler(run_dir / f"tlbench_rank{rank}.log")
            own.setFormatter(handler.formatter)
            root.addHandler(own)


if __name__ == "__main__":
    program()
