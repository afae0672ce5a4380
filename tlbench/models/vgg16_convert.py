"""VGG16 weights from Caffe (.caffemodel) or Keras (.h5) into the torchvision vgg16 state dict that
model.weights loads. The weights are not changed: the file keeps the input convention it was
trained with (BGR, 0-255, mean subtracted), which model.preprocessing=caffe reproduces.

    python -m tlbench.models.vgg16_convert vgg16_places365.caffemodel vgg16_places365.pth \\
        --mean-file places365CNN_mean.binaryproto
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torchvision

from tlbench.errors import TlbenchError, WeightsError
from tlbench.models.caffemodel import read_binaryproto, read_caffemodel
from tlbench.models.weights import file_sha256

# torchvision's vgg16: conv modules in `features`, fc6 / fc7 / head in `classifier`.
TORCHVISION_CONVS = tuple(f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28))
TORCHVISION_FCS = ("classifier.0", "classifier.3", "classifier.6")
# Layer names of the Caffe release (deploy_vgg16_places365.prototxt, the VGG ILSVRC-2014 model)
# and of keras.applications.VGG16 (also used by the Keras port of the Places365 VGG16).
CAFFE_CONVS = tuple(f"conv{b}_{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1))
KERAS_CONVS = tuple(f"block{b}_conv{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1))
KERAS_FCS = ("fc1", "fc2", "predictions")
POOL5 = (512, 7, 7)  # channels, height, width of the input of fc6 at 224 x 224


def from_caffe(layers: Mapping[str, list[np.ndarray]]) -> dict[str, torch.Tensor]:
    """Caffe blobs are (out, in, kh, kw) and (out, in) with fc6's input flattened as (C, H, W):
    torchvision's layout already. The head is the one layer besides conv*, fc6 and fc7 with weights
    (fc8 in the ImageNet model, fc8a in the Places365 one)."""
    heads = [n for n in layers if n not in (*CAFFE_CONVS, "fc6", "fc7") and len(layers[n]) == 2]
    if len(heads) != 1:
        raise WeightsError(f"expected one classifier layer besides conv1_1..conv5_3, fc6 and fc7; found {heads}")
    names = (*CAFFE_CONVS, "fc6", "fc7", heads[0])
    _require(names, layers, "Caffe")
    state = {}
    for caffe_name, module in zip(names, TORCHVISION_CONVS + TORCHVISION_FCS):
        weight, bias = layers[caffe_name][:2]
        out = bias.size
        weight = weight.reshape(out, -1, 3, 3) if module.startswith("features") else weight.reshape(out, -1)
        state[f"{module}.weight"] = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
        state[f"{module}.bias"] = torch.from_numpy(np.ascontiguousarray(bias.reshape(-1), dtype=np.float32))
    return state


def read_keras_h5(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> [kernel, bias] of the VGG16 layers in a Keras weights file (save_weights or a
    whole saved model: Keras 1 `layer/layer_W_1:0`, Keras 2 `layer/layer/kernel:0`, Keras 3
    `layers/layer/vars/0`). Optimizer slots are skipped; the kernel is told from the bias by its rank."""
    try:
        import h5py
    except ImportError as exc:
        raise WeightsError("reading Keras .h5 files needs h5py: pip install h5py") from exc
    wanted = set(KERAS_CONVS + KERAS_FCS)
    found: dict[str, dict[str, np.ndarray]] = {}

    def visit(name: str, item: object) -> None:
        parts = name.split("/")
        if not isinstance(item, h5py.Dataset) or any("optimizer" in p for p in parts):
            return
        layer = next((p for p in parts if p in wanted), None)
        if layer is None:
            return
        role = "kernel" if item.ndim >= 2 else "bias"
        if role in found.setdefault(layer, {}):
            raise WeightsError(f"{path}: layer {layer} has two {role} tensors ({name})")
        found[layer][role] = np.asarray(item[()], dtype=np.float32)

    try:
        with h5py.File(Path(path).expanduser(), "r") as handle:
            handle.visititems(visit)
    except OSError as exc:
        raise WeightsError(f"{path} cannot be read as an HDF5 file: {exc}") from exc
    return {layer: [roles.get("kernel"), roles.get("bias")] for layer, roles in found.items()}  # type: ignore[misc]


def from_keras(layers: Mapping[str, list[np.ndarray]]) -> dict[str, torch.Tensor]:
    """Keras kernels are (kh, kw, in, out) and (in, out); fc1's input is the channels-last flatten
    (H, W, C) of pool5, so its rows are reordered to torchvision's (C, H, W) flatten."""
    _require(KERAS_CONVS + KERAS_FCS, layers, "Keras")
    state = {}
    for keras_name, module in zip(KERAS_CONVS + KERAS_FCS, TORCHVISION_CONVS + TORCHVISION_FCS):
        kernel, bias = layers[keras_name]
        if kernel is None or bias is None:
            raise WeightsError(f"Keras layer {keras_name} lacks its kernel or its bias")
        if kernel.ndim == 4:
            weight = kernel.transpose(3, 2, 0, 1)
        elif keras_name == "fc1":
            c, h, w = POOL5
            if kernel.shape[0] != c * h * w:
                raise WeightsError(f"Keras fc1 has {kernel.shape[0]} inputs, VGG16 at 224 x 224 has {c * h * w}")
            weight = kernel.reshape(h, w, c, -1).transpose(3, 2, 0, 1).reshape(-1, c * h * w)
        else:
            weight = kernel.T
        state[f"{module}.weight"] = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
        state[f"{module}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
    return state


def _require(names: tuple[str, ...], layers: Mapping, kind: str) -> None:
    missing = [n for n in names if n not in layers]
    if missing:
        raise WeightsError(
            f"the {kind} file lacks the VGG16 layers {', '.join(missing)} (found {', '.join(list(layers)[:20])}); "
            "tlbench reads fc6 and fc7, so a file without the top layers ('notop') cannot be used"
        )


def check_fits_vgg16(state: Mapping[str, torch.Tensor]) -> None:
    """Load into torchvision's vgg16 (head resized to the file's classes): every key and shape fits."""
    model = torchvision.models.vgg16(weights=None)
    classes, features = state["classifier.6.weight"].shape
    model.classifier[6] = torch.nn.Linear(features, classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"the converted weights do not fit torchvision's vgg16: {exc}") from exc


def convert(source: str | Path, target: str | Path) -> dict[str, torch.Tensor]:
    """Read `source` (a .caffemodel, or Keras weights in .h5 / .hdf5), write the state dict to `target`."""
    suffix = Path(source).suffix.lower()
    if suffix == ".caffemodel":
        state = from_caffe(read_caffemodel(source))
    elif suffix in (".h5", ".hdf5"):
        state = from_keras(read_keras_h5(source))
    else:
        raise WeightsError(f"{source}: expected a .caffemodel or a Keras .h5 file")
    check_fits_vgg16(state)
    Path(target).expanduser().parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, Path(target).expanduser())
    return state


def channel_mean(mean_file: str | Path) -> list[float]:
    """The per-channel mean (BGR, 0-255) of a Caffe mean image: the model.caffe_mean of its weights."""
    return [round(float(v), 3) for v in read_binaryproto(mean_file).mean(axis=(1, 2))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tlbench.models.vgg16_convert",
        description="Convert Caffe (.caffemodel) or Keras (.h5) VGG16 weights into the torchvision state dict "
        "that model.weights loads. The weights keep their input convention: use model.preprocessing=caffe.",
    )
    parser.add_argument("source", help="a .caffemodel, or a Keras .h5 with the top layers (fc1, fc2, predictions)")
    parser.add_argument("target", help="the .pth file to write")
    parser.add_argument("--mean-file", help="the Caffe mean image (.binaryproto) the weights were trained with")
    args = parser.parse_args(argv)
    try:
        state = convert(args.source, args.target)
        mean = channel_mean(args.mean_file) if args.mean_file else None
    except TlbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    classes = state["classifier.6.weight"].shape[0]
    print(f"wrote {args.target}: torchvision vgg16, {classes}-class head, sha256 {file_sha256(args.target)}")
    overrides = f"model=vgg16 model.weights={args.target} model.preprocessing=caffe"
    if mean is not None:
        print(f"per-channel mean of {args.mean_file} (BGR, 0-255): {mean}")
        overrides += f" model.caffe_mean=[{','.join(str(v) for v in mean)}]"
    print(f"use it with: {overrides}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
