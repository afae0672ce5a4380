"""Taps: which module outputs (or inputs) an extraction reads, by preset or by name.

Presets
  vgg16_fne    the original Full-Network Embedding on torchvision VGG16: the post-ReLU outputs of
               the 13 conv layers plus fc6 and fc7, 12,416 dimensions once spatially averaged.
  vgg16_fne_pre_relu  the same layers read before their ReLU, as the PyTorch `fne` package does.
  fc6, fc7     one post-ReLU fully connected layer of VGG16 (4,096 dimensions each).
  penultimate  the input of the model's classifier (pooled pre-logits), for any model.
  activations  the generic FNE rule for other CNNs: the output of every activation module
               (ReLU, ReLU6, SiLU, GELU, Hardswish, ..., torch's and timm's own classes; timm's
               fused BatchNormAct layers call one too), in forward order. A module called
               several times (torchvision's ResNet reuses one ReLU per block) gives one tap per
               call. For a network whose activations are functional calls rather than modules,
               every Conv2d and Linear output is tapped. 4-D maps are averaged over space: NCHW
               for convolutions, NHWC for Linear/LayerNorm outputs (ConvNeXt), and for modules
               that do not tell (activations) the square spatial dimensions decide.
Anything else is read as a comma-free module name (`features.29`, `blocks.6`), or a list of them;
`name:input` reads the module's input instead of its output.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from tlbench.errors import ConfigError

log = logging.getLogger(__name__)

VGG16_CONV_RELUS = (1, 3, 6, 8, 11, 13, 15, 18, 20, 22, 25, 27, 29)
VGG16_FNE = (*(f"features.{i}" for i in VGG16_CONV_RELUS), "classifier.1", "classifier.4")
VGG16_FNE_DIM = 12_416

# The PyTorch `fne` package hooks the Conv2d/Linear modules, i.e. reads values before the ReLU.
VGG16_FNE_PRE_RELU = (*(f"features.{i - 1}" for i in VGG16_CONV_RELUS), "classifier.0", "classifier.3")

NAMED_PRESETS: dict[str, tuple[str, ...]] = {
    "vgg16_fne": VGG16_FNE,
    "vgg16_fne_pre_relu": VGG16_FNE_PRE_RELU,
    "fc6": ("classifier.1",),
    "fc7": ("classifier.4",),
}
RULE_PRESETS = ("penultimate", "activations")
# Activation modules by class name: torch's own and timm's re-implementations (timm's GELU, Swish,
# HardSwish, the memory-efficient *Me variants ...), which do not subclass torch's.
ACTIVATIONS = frozenset({
    "ReLU", "ReLU6", "SiLU", "Swish", "SwishMe", "GELU", "GELUTanh", "QuickGELU", "Hardswish",
    "HardSwish", "HardSwishMe", "Mish", "MishMe", "HardMish", "HardMishMe", "LeakyReLU", "ELU",
    "SELU", "CELU", "PReLU",
})  # fmt: skip


@dataclass(frozen=True)
class Tap:
    module: str
    read: str = "output"  # "output" or "input"

    def __str__(self) -> str:
        return self.module if self.read == "output" else f"{self.module}:input"


def resolve_taps(model: nn.Module, spec: str | Sequence[str], head: str) -> list[Tap]:
    """Turn a preset name, a module name or a list of them into concrete taps on `model`."""
    items = [spec] if isinstance(spec, str) else list(spec)
    if not items:
        raise ConfigError("no taps given: name a preset (" + ", ".join(presets()) + ") or module names")
    modules = dict(model.named_modules())
    taps: list[Tap] = []
    for item in items:
        item = str(item)
        if item == "penultimate":
            taps.append(Tap(head, "input"))
        elif item == "activations":
            taps.extend(_activation_taps(model, head))
        elif item in NAMED_PRESETS:
            for name in NAMED_PRESETS[item]:
                _check_preset_module(modules, name, item)
                taps.append(Tap(name))
        else:
            name, _, read = item.partition(":")
            read = read or "output"
            if read not in ("output", "input"):
                raise ConfigError(f"tap {item!r}: the suffix must be ':input' (or nothing for the output)")
            if name not in modules or name == "":
                raise ConfigError(_unknown_module_message(name, modules))
            taps.append(Tap(name, read))
    if len(set(taps)) != len(taps):
        raise ConfigError(f"taps repeat a layer: {[str(t) for t in taps]}")
    return taps


def presets() -> list[str]:
    return [*NAMED_PRESETS, *RULE_PRESETS]


def _check_preset_module(modules: dict[str, nn.Module], name: str, preset: str) -> None:
    module = modules.get(name)
    expected = nn.ReLU if preset in ("vgg16_fne", "fc6", "fc7") else nn.Conv2d | nn.Linear
    if not isinstance(module, expected):
        raise ConfigError(
            f"tap preset {preset!r} expects torchvision's VGG16 layout, where {name} is a "
            f"{'ReLU' if expected is nn.ReLU else 'Conv2d/Linear'}; "
            f"this model has {type(module).__name__ if module is not None else 'no such module'}. "
            "Use model=vgg16, or the generic preset 'activations'."
        )


def _activation_taps(model: nn.Module, head: str) -> list[Tap]:
    taps = [
        Tap(name)
        for name, module in model.named_modules()
        if type(module).__name__ in ACTIVATIONS and not name.startswith(head + ".")
    ]
    if not taps:  # activations applied functionally: fall back to conv and linear outputs
        log.warning("no activation modules found: the FNE taps every Conv2d and Linear output instead")
        taps = [
            Tap(name)
            for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d | nn.Linear) and name != head
        ]
    return taps


def _unknown_module_message(name: str, modules: dict[str, nn.Module]) -> str:
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=8, cutoff=0.6)
    return (
        f"unknown tap {name!r}: not a preset ({', '.join(presets())}) and not a module of this model. "
        + (f"Similar modules: {', '.join(close)}. " if close else "")
        + f"The model has {len(names)} modules, e.g. {', '.join(names[:8])} ..."
    )
