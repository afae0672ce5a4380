"""Thin Hydra entry point: `tlbench [overrides]` composes conf/ and calls run(cfg)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

log = logging.getLogger("tlbench")


def config_dir() -> Path:
    """The config tree: inside the package for a wheel install, the repository's conf/ otherwise."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise SystemExit(f"tlbench: cannot find the config tree (conf/config.yaml) next to {here}; reinstall tlbench")


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _main(cfg: DictConfig) -> float:
    from tlbench.errors import TlbenchError
    from tlbench.results import print_summary
    from tlbench.run import run

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        result = run(cfg, run_dir)
    except TlbenchError as exc:
        log.error("%s", exc)
        print(f"tlbench: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print_summary(result)
    return result.headline


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
