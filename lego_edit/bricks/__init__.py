"""Bricks: the registry of editing tools, their specs, the function bricks and the Builder prompt."""

from .registry import ENTRY_POINT_GROUP, BrickRegistry, default_registry
from .spec import BrickSpec, Mode, Port

__all__ = ["BrickRegistry", "BrickSpec", "ENTRY_POINT_GROUP", "Mode", "Port", "default_registry"]
