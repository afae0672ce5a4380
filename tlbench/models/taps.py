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
               On a transformer this reads each block's MLP hidden GELU (4x the embedding width,
               averaged over every token), not the representation: a warning points to
               `transformer_blocks` (a warning, not an error, so that this embedding can still be
               measured against it).
  transformer_blocks  the FNE rule for timm's token transformers (VisionTransformer and its
               variants: DeiT, DINOv2, SigLIP, ...; Eva; BEiT; VisionTransformerRelPos): the
               residual stream after every block (`blocks.i`), read as two taps of `embed_dim`
               each: the class token (`blocks.i:cls`, token 0) and the mean of the patch tokens
               (`blocks.i:patches`, tokens [num_prefix_tokens:]; the class, distillation and
               register tokens that timm's `_pos_embed` puts in front are excluded). A model
               without a class token (global_pool='avg', class_token=False) gets the patch mean
               only. The last block is read after the final `norm`, when the model has one: timm's
               `forward_features` ends with `self.norm(x)` and `forward_head` pools that (`pool`,
               `global_pool_nlc`: token 0, or the mean of tokens [num_prefix_tokens:]), so the
               last taps are what the head reads (`norm:cls` equals `penultimate` for a ViT with
               token pooling); models that normalize after pooling (`fc_norm`, global_pool='avg':
               BEiT, Eva02) keep the last block's output. Of a layer's two taps the one the head
               pools comes last, so "the last tap" (few-shot `last_layer`, the layer curve's last
               layer) is what the head pools. An attention-pooled head (global_pool='map', SigLIP)
               is not tapped: list `penultimate` too. A ViT-S/16 gives 12 x 2 x 384 = 9,216
               dimensions. CaiT, Swin and other layouts are refused (CaiT adds its class token
               after its blocks; Swin's blocks hold NHWC maps): list their modules by name.
               Post-processing is unchanged: standardization with train statistics applies column
               by column as for any tap, but the FNE's discretization thresholds (-0.25, 0.15)
               were chosen for post-ReLU CNN features (Garcia-Gasulla et al. 2018), whose
               standardized values are skewed by the ReLU; token features are signed, so the
               thresholds split them differently and are not validated for transformers.
Anything else is read as a comma-free module name (`features.29`, `blocks.6`), or a list of them;
`name:input` reads the module's input instead of its output. On the token transformers above,
`name:cls` reads token 0 of the module's (N, L, C) output and `name:patches` the mean of its patch
tokens, the names the `transformer_blocks` preset gives its taps (`blocks.11:cls`, `norm:patches`),
so they can be listed explicitly, e.g. analysis.few_shot.methods=[layer:blocks.11:cls]. Other 3-D
(N, L, C) outputs are averaged over all L tokens.
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
RULE_PRESETS = ("penultimate", "activations", "transformer_blocks")
# Activation modules by class name: torch's own and timm's re-implementations (timm's GELU, Swish,
# HardSwish, the memory-efficient *Me variants ...), which do not subclass torch's.
ACTIVATIONS = frozenset({
    "ReLU", "ReLU6", "SiLU", "Swish", "SwishMe", "GELU", "GELUTanh", "QuickGELU", "Hardswish",
    "HardSwish", "HardSwishMe", "Mish", "MishMe", "HardMish", "HardMishMe", "LeakyReLU", "ELU",
    "SELU", "CELU", "PReLU",
})  # fmt: skip


# How a token tap reads a module's (N, L, C) output: token 0, or the mean of the patch tokens.
TOKEN_READS = ("cls", "patches")
# timm families whose blocks carry the prefix tokens in front of the patch tokens:
# VisionTransformer._pos_embed (and Eva's, Beit's, VisionTransformerRelPos's forward_features)
# concatenate [cls_token, dist/reg tokens, patches] before the blocks, and num_prefix_tokens counts
# them. CaiT also has num_prefix_tokens but adds its class token after its blocks, so the attribute
# alone does not tell.
TOKEN_MODELS = frozenset({"VisionTransformer", "Eva", "Beit", "VisionTransformerRelPos"})


@dataclass(frozen=True)
class Tap:
    module: str
    read: str = "output"  # "output" or "input"
    tokens: str | None = None  # (N, L, C) output read as: "cls" (token 0), "patches" (mean of patch tokens)

    def __post_init__(self) -> None:
        if self.tokens is not None and (self.tokens not in TOKEN_READS or self.read != "output"):
            raise ValueError(f"Tap tokens must be one of {TOKEN_READS} on a module output, not {self}")

    def __str__(self) -> str:
        if self.tokens is not None:
            return f"{self.module}:{self.tokens}"
        return self.module if self.read == "output" else f"{self.module}:input"


@dataclass(frozen=True)
class TokenLayout:
    """Where the tokens of a timm transformer's residual stream are."""

    class_token: bool  # token 0 is the class token
    prefix: int  # num_prefix_tokens: class + distillation + register tokens, before the patches
    pool: str  # global_pool: what the head reads ('token' = the class token)


def token_layout(model: nn.Module) -> TokenLayout:
    """The token layout of a timm VisionTransformer, Eva, Beit or VisionTransformerRelPos."""
    family = next((c.__name__ for c in type(model).__mro__ if c.__name__ in TOKEN_MODELS), None)
    prefix = getattr(model, "num_prefix_tokens", None)
    if family is None or not isinstance(prefix, int) or not isinstance(getattr(model, "blocks", None), nn.Module):
        raise ConfigError(
            f"class-token and patch-mean taps need a timm token transformer ({', '.join(sorted(TOKEN_MODELS))}: "
            f"blocks + num_prefix_tokens); {type(model).__name__} is not one. List its modules by name "
            "(their (N, L, C) outputs are averaged over all tokens), or use 'penultimate'."
        )
    # timm's VisionTransformer sets cls_token = None when class_token=False (also Eva's)
    return TokenLayout(getattr(model, "cls_token", None) is not None, prefix, str(getattr(model, "global_pool", "")))


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
            _warn_if_transformer(model)
            taps.extend(_activation_taps(model, head))
        elif item == "transformer_blocks":
            taps.extend(_transformer_block_taps(model))
        elif item in NAMED_PRESETS:
            for name in NAMED_PRESETS[item]:
                _check_preset_module(modules, name, item)
                taps.append(Tap(name))
        else:
            name, _, read = item.partition(":")
            read = read or "output"
            if read not in ("output", "input", *TOKEN_READS):
                raise ConfigError(
                    f"tap {item!r}: the suffix must be ':input', ':cls' or ':patches' (or nothing for the output)"
                )
            if name not in modules or name == "":
                raise ConfigError(_unknown_module_message(name, modules))
            if read in TOKEN_READS:
                if not token_layout(model).class_token and read == "cls":  # token_layout: a known layout
                    raise ConfigError(f"tap {item!r}: {type(model).__name__} has no class token; read ':patches'")
                taps.append(Tap(name, tokens=read))
            else:
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


def _transformer_block_taps(model: nn.Module) -> list[Tap]:
    layout = token_layout(model)
    names = [f"blocks.{i}" for i in range(len(model.get_submodule("blocks")))]
    norm = getattr(model, "norm", None)
    # forward_features ends with self.norm(x), which forward_head pools: read the last block there.
    # Models that normalize after pooling (fc_norm) have norm = Identity and keep the block.
    if isinstance(norm, nn.Module) and not isinstance(norm, nn.Identity) and names:
        names[-1] = "norm"
    reads = ["cls", "patches"] if layout.class_token else ["patches"]
    if layout.pool == "token":  # the head reads token 0 (global_pool_nlc): make it each layer's last tap
        reads.reverse()
    return [Tap(name, tokens=read) for name in names for read in reads]


def _warn_if_transformer(model: nn.Module) -> None:
    """The activation rule on a transformer taps each block's MLP hidden GELU, 4x wide and averaged
    over every token, rather than the residual stream: say so, and name the rule that fits."""
    if not any(hasattr(m, "attn") and hasattr(m, "mlp") for m in model.modules()):
        return
    try:
        token_layout(model)
        advice = "use model.fne_taps=transformer_blocks (each block's class token and patch mean)"
    except ConfigError:
        advice = "list the block outputs by name (the transformer_blocks preset does not know this layout)"
    log.warning(
        "tap preset 'activations' on %s, a transformer: it reads each block's MLP hidden activation "
        "(averaged over all tokens), not the blocks' output; %s",
        type(model).__name__,
        advice,
    )


def _unknown_module_message(name: str, modules: dict[str, nn.Module]) -> str:
    names = [n for n in modules if n]
    close = difflib.get_close_matches(name, names, n=8, cutoff=0.6)
    return (
        f"unknown tap {name!r}: not a preset ({', '.join(presets())}) and not a module of this model. "
        + (f"Similar modules: {', '.join(close)}. " if close else "")
        + f"The model has {len(names)} modules, e.g. {', '.join(names[:8])} ..."
    )
