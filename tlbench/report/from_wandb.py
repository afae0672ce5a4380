"""tlbench-report --wandb ENTITY/PROJECT: the same table from runs logged to W&B (logger=wandb),
read with the W&B public API. Needs credentials and network, checked first (in seconds)."""

from __future__ import annotations

from typing import Any

from tlbench.errors import TlbenchError
from tlbench.report.collect import Collected
from tlbench.tracking.wandb_logger import choose_mode


def collect_wandb(project: str) -> Collected:
    mode, why = choose_mode(offline=False)
    if mode != "online":
        raise TlbenchError(
            f"--wandb needs W&B online, but {why}. Report from the run directories instead "
            "(tlbench-report outputs/), or sync offline runs (`wandb sync`) and report where W&B is reachable"
        )
    import wandb

    from tlbench.data import dataset_info

    out = Collected()
    for run in wandb.Api(timeout=60).runs(project):
        config: dict[str, Any] = dict(run.config)
        summary = run.summary
        try:
            name = config["dataset"]["name"]
            test = {k: float(summary[f"test/{k}"]) for k in ("top1", "mean_per_class") if f"test/{k}" in summary}
            info = dataset_info(name)
            record = {
                "dataset": name,
                "model": config["model"]["name"],
                "strategy": config["strategy"]["name"],
                "seed": config.get("seed"),
                "headline_metric": info.metric if info else "top1",
                "metrics": {"test": test},
                "config": config,
                "_path": run.url,
            }
        except (KeyError, TypeError, ValueError) as exc:
            out.skipped.append((run.url, f"not a finished tlbench run ({exc})"))
            continue
        if not test:
            out.skipped.append((run.url, "no test metrics in its summary (unfinished or failed)"))
            continue
        out.results.append(record)
    if not out.results and not out.skipped:
        raise TlbenchError(f"no runs in the W&B project {project}")
    return out
