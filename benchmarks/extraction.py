"""Extraction: throughput against a bare forward pass, and peak memory against the dataset size.

Targets (issue: performance):

- **throughput**: tlbench's FNE extraction of a fixed set of images (`tlbench.embedding.pipeline.extract_split`:
  the DataLoader with JPEG decoding and the eval transform, `Trainer.predict`, the tap hooks,
  rows streamed to a FeatureStore entry) takes at most 1.10x the time of a bare forward pass of the
  same model over the same batches (tensors prepared beforehand, no hooks, `inference_mode`). The
  two alternate for several rounds after a discarded warm-up; the figure is the median over rounds
  of the ratio of a round's two times (the ratio of the median times is recorded too).
- **memory**: the peak resident memory of a process that extracts 10x more images (3,000 against
  300 by default: 220 MiB of float32 FNE features, which an in-memory assembly would hold two or
  three times over) is at most 1.2x that of the same extraction on 1x (each in a fresh child
  process, its `VmHWM`, DataLoader workers off so that every byte is in the measured process).

Both use the default job's model (efficientnet_lite0, packaged weights) and FNE taps, on a
generated image folder of JPEG files. Prints a table, writes benchmarks/results/extraction.json,
exits 1 when a target is missed.

    python benchmarks/extraction.py [--images 256] [--size 256] [--batch 32] [--workers N] [--rounds 5]
                                    [--memory-images 300] [--only throughput|memory]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

THROUGHPUT_TARGET = 1.10
MEMORY_TARGET = 1.2


def make_folder(root: Path, images: int, size: int, classes: int = 4) -> Path:
    """ROOT/train/<class>/*.jpg (and a small test/), photographs-like noise with a class colour."""
    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("test", classes)):
        for i in range(count):
            folder = root / split / f"class{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([60 * (i % classes), 255 - 50 * (i % classes), 128], np.float32)
            pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def compose(folder: Path, cache: Path, *overrides: str) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from tlbench.cli import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose(
            "config",
            overrides=[
                "dataset=imagefolder",
                f"dataset.root={folder}",
                "trainer.default_root_dir=null",
                "trainer.enable_progress_bar=false",
                "logger=none",
                f"paths.cache_dir={cache}",
                *overrides,
            ],
        )


def build(cfg: Any) -> tuple[Any, Any, Any]:
    """Backbone, taps and datamodule exactly as tlbench.run.run builds them."""
    from hydra.utils import instantiate

    from tlbench.data import TransferDataModule
    from tlbench.data.transforms import eval_transform
    from tlbench.models import resolve_taps

    backbone = instantiate(cfg.model, _convert_="all")
    taps = resolve_taps(backbone.model, cfg.strategy.taps, backbone.head)
    datamodule = TransferDataModule(
        "imagefolder",
        transform=eval_transform(backbone.data_config),
        input_size=backbone.data_config["input_size"],
        root=cfg.dataset.root,
        batch_size=cfg.dataset.batch_size,
        num_workers=cfg.dataset.num_workers,
    )
    return backbone, taps, datamodule


def extract(cfg: Any, backbone: Any, taps: Any, datamodule: Any, work: Path, key: str) -> Any:
    from omegaconf import OmegaConf

    from tlbench.embedding.pipeline import extract_split
    from tlbench.embedding.store import FeatureStore
    from tlbench.trainer import build_trainer, trainer_settings

    trainer = build_trainer(trainer_settings(OmegaConf.to_container(cfg.trainer, resolve=True)))
    store = FeatureStore(work / "cache")
    return extract_split(trainer, backbone, taps, datamodule, "train", store, key, work / "run")


def throughput(args: argparse.Namespace, tmp: Path) -> dict:
    folder = make_folder(tmp / "images", args.images, args.size)
    overrides = [f"dataset.batch_size={args.batch}"]
    if args.workers is not None:
        overrides.append(f"dataset.num_workers={args.workers}")
    cfg = compose(folder, tmp / "cache", *overrides)
    backbone, taps, datamodule = build(cfg)
    batches = [batch["image"] for batch in datamodule.loader("train")]  # the same batches, as tensors
    model = backbone.model.eval()

    def bare() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for images in batches:
                model(images)
        return time.perf_counter() - start

    def tlbench(round_: int) -> float:
        start = time.perf_counter()
        features = extract(cfg, backbone, taps, datamodule, tmp / f"round{round_}", f"r{round_}")
        elapsed = time.perf_counter() - start
        assert len(features.labels) == args.images
        return elapsed

    tlbench(-1), bare()  # warm-up: allocator, thread pools, file cache
    times: dict[str, list[float]] = {"tlbench": [], "bare": []}
    for r in range(args.rounds):
        times["tlbench"].append(tlbench(r))
        times["bare"].append(bare())
    ours, base = statistics.median(times["tlbench"]), statistics.median(times["bare"])
    # each round's pair ran back to back, under the same load from the rest of the machine
    pair_ratio = statistics.median(t / b for t, b in zip(times["tlbench"], times["bare"]))
    return {
        "images": args.images,
        "image_size": args.size,
        "input_size": list(backbone.data_config["input_size"]),
        "batch_size": args.batch,
        "num_workers": int(cfg.dataset.num_workers),
        "torch_threads": torch.get_num_threads(),
        "feature_dim": int(features_dim(tmp)),
        "tlbench_s": [round(t, 3) for t in times["tlbench"]],
        "bare_forward_s": [round(t, 3) for t in times["bare"]],
        "tlbench_images_per_s": round(args.images / ours, 2),
        "bare_images_per_s": round(args.images / base, 2),
        "ratio": round(pair_ratio, 3),
        "ratio_of_medians": round(ours / base, 3),
        "target": THROUGHPUT_TARGET,
    }


def features_dim(tmp: Path) -> int:
    meta = next((tmp / "round0" / "cache").glob("r0/meta.json"))
    return json.loads(meta.read_text())["dim"]


def child_peak_rss(images: int, tmp: Path) -> dict:
    """In a fresh process: extract `images` images (64x64, FNE) and report its peak RSS."""
    folder = make_folder(tmp / f"mem{images}", images, 64)
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import extraction as b\n"
        "cfg = b.compose(Path(sys.argv[2]), Path(sys.argv[3]), 'dataset.num_workers=0', "
        "'model.data_config.input_size=[3,64,64]')\n"
        "backbone, taps, datamodule = b.build(cfg)\n"
        "rss = next(l for l in open('/proc/self/status') if l.startswith('VmRSS:'))\n"
        "fs = b.extract(cfg, backbone, taps, datamodule, Path(sys.argv[3]), 'mem')\n"
        # VmHWM: this process image's own peak; ru_maxrss would carry the parent's over fork+exec
        "hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "print(json.dumps({'rows': int(len(fs.labels)), 'dim': fs.dim, "
        "'peak_rss_mib': int(hwm.split()[1]) / 1024, 'model_loaded_rss_mib': int(rss.split()[1]) / 1024}))\n"
    )
    work = tmp / f"work{images}"
    proc = subprocess.run(
        [sys.executable, "-c", script, str(Path(__file__).parent), str(folder), str(work)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"memory child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory(args: argparse.Namespace, tmp: Path) -> dict:
    one = child_peak_rss(args.memory_images, tmp)
    ten = child_peak_rss(10 * args.memory_images, tmp)
    ratio = ten["peak_rss_mib"] / one["peak_rss_mib"]
    return {
        "images_1x": one["rows"],
        "images_10x": ten["rows"],
        "feature_dim": one["dim"],
        "float32_features_10x_mib": round(ten["rows"] * ten["dim"] * 4 / 2**20, 1),
        "peak_rss_1x_mib": round(one["peak_rss_mib"], 1),
        "peak_rss_10x_mib": round(ten["peak_rss_mib"], 1),
        # what the extraction itself added on top of the loaded model and data index
        "growth_1x_mib": round(one["peak_rss_mib"] - one["model_loaded_rss_mib"], 1),
        "growth_10x_mib": round(ten["peak_rss_mib"] - ten["model_loaded_rss_mib"], 1),
        "ratio": round(ratio, 3),
        "target": MEMORY_TARGET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256, help="images per throughput round")
    parser.add_argument("--size", type=int, default=256, help="side of the generated JPEGs")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: the config's)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-images", type=int, default=300, help="1x of the memory figure")
    parser.add_argument("--only", choices=("throughput", "memory"), default=None)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    report: dict[str, Any] = {
        "benchmark": "extraction",
        "model": "efficientnet_lite0 (packaged weights), strategy fne",
        "machine": {
            "platform": platform.platform(),
            "cpus": len(os.sched_getaffinity(0)),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "host": platform.node(),
            "torch": torch.__version__,
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "throughput"):
            report["throughput"] = throughput(args, Path(tmp))
        if args.only in (None, "memory"):
            report["memory"] = memory(args, Path(tmp))

    print(f"{'figure':<44}{'value':>10}{'target':>10}")
    ok = True
    if "throughput" in report:
        t = report["throughput"]
        print(f"{'tlbench extraction (images/s)':<44}{t['tlbench_images_per_s']:>10.1f}")
        print(f"{'bare forward (images/s)':<44}{t['bare_images_per_s']:>10.1f}")
        print(f"{'extraction time / bare forward time':<44}{t['ratio']:>10.3f}{'<= 1.10':>10}")
        ok &= t["ratio"] <= THROUGHPUT_TARGET
    if "memory" in report:
        m = report["memory"]
        print(f"{'peak RSS, ' + str(m['images_1x']) + ' images (MiB)':<44}{m['peak_rss_1x_mib']:>10.1f}")
        print(f"{'peak RSS, ' + str(m['images_10x']) + ' images (MiB)':<44}{m['peak_rss_10x_mib']:>10.1f}")
        print(
            f"{'  of which the extraction, 1x / 10x (MiB)':<44}{m['growth_1x_mib']:>10.1f}{m['growth_10x_mib']:>10.1f}"
        )
        print(f"{'float32 features of 10x (MiB)':<44}{m['float32_features_10x_mib']:>10.1f}")
        print(f"{'peak RSS 10x / 1x':<44}{m['ratio']:>10.3f}{'<= 1.2':>10}")
        ok &= m["ratio"] <= MEMORY_TARGET
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "extraction.json").write_text(json.dumps(report, indent=2))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
