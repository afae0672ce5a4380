"""Reading weight files and checking that they fit the model: never a silent random init."""

from __future__ import annotations

import hashlib
import logging
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from tlbench.errors import WeightsError

log = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")
_PREFIXES = ("module.", "model.", "backbone.", "net.")


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def state_digest(model: nn.Module) -> str:
    """A digest of the model's current tensors: identifies weights that have no file (a random
    init, which depends on the seed)."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _torch_load(path: Path) -> object:
    """weights_only loading. A Lightning .ckpt may also pickle its hyperparameters (an OmegaConf
    config in Hydra projects), which only a full unpickling reads: allowed for a .ckpt that is a
    real torch.save archive whose only obstacle is such a pickled class, never for other files."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if path.suffix != ".ckpt" or not zipfile.is_zipfile(path) or "Unsupported global" not in str(exc):
            raise WeightsError(_unreadable(path, exc)) from None
        log.warning("%s pickles more than tensors (hyperparameters); loading it with weights_only=False", path)
        return torch.load(path, map_location="cpu", weights_only=False)


def _unreadable(path: Path, exc: BaseException) -> str:
    """Why a file is not a checkpoint tlbench reads, without torch's advice to load it unsafely."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as handle:
            head = handle.read(2)
        if not (len(head) == 2 and head[0] == 0x80):  # a (legacy) torch.save pickle starts with PROTO
            return (
                f"weights file {path} is not a checkpoint tlbench can read: it is neither a torch.save archive, "
                "a pickle nor a .safetensors file (a truncated download, or another format). Give a .pth/.pt "
                "state dict, a .safetensors file or a Lightning .ckpt"
            )
    detail = str(exc).split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if str(exc) else type(exc).__name__
    return (
        f"weights file {path} is not a checkpoint tlbench can read ({detail}). tlbench loads weights with "
        "torch.load(weights_only=True) and does not unpickle arbitrary objects: save the weights as a state "
        "dict (torch.save(model.state_dict(), path)) or as .safetensors"
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, .pth/.pt/.bin or a Lightning checkpoint, wrappers removed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} does not exist. Give an existing file with model.weights=PATH "
            "(a .pth/.pt state dict, a .safetensors file or a Lightning .ckpt)."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = _torch_load(path)
    except WeightsError:
        raise
    except Exception as exc:  # pickle, zip and safetensors each raise their own types
        if "weights_only" in str(exc):  # torch's text suggests unsafe loading: say it our way
            raise WeightsError(_unreadable(path, exc)) from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"weights file {path} is not a checkpoint tlbench can read ({reason})") from exc
    while isinstance(state, Mapping) and not _is_tensor_dict(state):
        inner = next((state[k] for k in _WRAPPER_KEYS if k in state and isinstance(state[k], Mapping)), None)
        if inner is None:
            raise WeightsError(
                f"weights file {path} holds a dict with keys {sorted(state)[:10]} but no tensors "
                f"(looked inside {list(_WRAPPER_KEYS)})"
            )
        state = inner
    if not isinstance(state, Mapping):
        raise WeightsError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def _is_tensor_dict(state: Mapping) -> bool:
    return bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def strip_prefixes(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Remove DDP/Lightning wrapper prefixes when that makes the keys match the model."""
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            stripped = {k[len(prefix) :]: v for k, v in state.items()}
            if len(set(stripped) & expected) > len(set(state) & expected):
                state = stripped
    return state


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` strictly; any missing, unexpected or mis-shaped key is a WeightsError naming them."""
    own = model.state_dict()
    state = strip_prefixes(state, set(own))
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:

        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f" ... ({len(items)} in all)" if len(items) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {show(shapes)}")
        raise WeightsError(
            f"weights from {source} do not match the model {type(model).__name__}: "
            + "; ".join(parts)
            + ". Check model.name / model.source against the file."
        )
    model.load_state_dict(state, strict=True)


def map_in_order(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename a state dict whose tensors come in the model's key order (another port of the same
    network), checking count and every shape."""
    own = model.state_dict()
    if len(state) != len(own):
        raise WeightsError(f"{source}: {len(state)} tensors but the model has {len(own)}")
    mapped = {}
    for (src_key, tensor), (dst_key, target) in zip(state.items(), own.items()):
        if tensor.shape != target.shape:
            raise WeightsError(
                f"{source}: tensor {src_key} {tuple(tensor.shape)} does not fit "
                f"{dst_key} {tuple(target.shape)} when mapped in order"
            )
        mapped[dst_key] = tensor
    return mapped


def assert_trained(model: nn.Module, source: str) -> None:
    """Sanity check that loaded weights are not a fresh init: trained BatchNorm layers have moved
    their running statistics away from (mean 0, var 1)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    norms = [m for m in norms if m.running_mean is not None]
    if not norms:
        return
    untouched = sum(bool(torch.all(m.running_mean == 0) and torch.all(m.running_var == 1)) for m in norms)
    if untouched > len(norms) // 2:
        raise WeightsError(
            f"{source}: {untouched} of {len(norms)} BatchNorm layers hold initial statistics; "
            "these weights look untrained"
        )
