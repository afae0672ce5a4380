"""Backbones (timm, torchvision, packaged weights), weight files, and taps (which layers are read)."""

from tlbench.models.backbones import Backbone, create_backbone
from tlbench.models.taps import Tap, resolve_taps

__all__ = ["Backbone", "Tap", "create_backbone", "resolve_taps"]
