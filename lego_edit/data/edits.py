"""Edit operations on scene graphs. Each returns the edited scene; rendering it gives the exact target.

Operations refuse edits the world cannot show (an object that would overlap another or leave the canvas,
a pose change on a shape that looks the same rotated) by raising EditImpossible, so the instruction
generator only produces edits whose target is well defined.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..bricks.functions import scaled_box, side_extensions
from .shapes import (
    BACKGROUNDS,
    COLORS,
    ENVIRONMENTS,
    ORIENTATIONS,
    PATTERNS,
    SHAPES,
    STYLES,
    TEXTURES,
    Obj,
    Scene,
    box_free,
    place_box,
    render_layers,
)


class EditImpossible(ValueError):
    """The edit cannot be shown in this scene (overlap, out of canvas, no visible change)."""


def _obj(scene: Scene, index: int) -> Obj:
    if not 0 <= index < len(scene.objects):
        raise EditImpossible(f"no object {index}")
    return scene.objects[index]


def _swap(scene: Scene, index: int, obj: Obj) -> Scene:
    objs = list(scene.objects)
    objs[index] = obj
    return scene.with_objects(objs)


def remove(scene: Scene, index: int) -> Scene:
    _obj(scene, index)
    return scene.with_objects(o for i, o in enumerate(scene.objects) if i != index)


def add(scene: Scene, obj: Obj, place: str | None = None, size: str = "medium") -> Scene:
    """Add ``obj``; with ``place`` its box is the named place's box of the named size."""
    if place is not None:
        obj = replace(obj, box=place_box(place, size, scene.width, scene.height, scene.base_size))
    if not box_free(scene, obj.box):
        raise EditImpossible(f"a new object at {obj.box} would overlap another object or the border")
    return scene.with_objects((*scene.objects, obj))


def recolor(scene: Scene, index: int, color: str | None = None, pattern: str | None = None) -> Scene:
    obj = _obj(scene, index)
    new = replace(obj, color=color or obj.color, pattern=pattern or obj.pattern)
    if new == obj:
        raise EditImpossible("the object already looks like that")
    return _swap(scene, index, new)


def replace_object(scene: Scene, index: int, shape: str, color: str | None = None, pattern: str | None = None) -> Scene:
    obj = _obj(scene, index)
    new = Obj(shape, color or obj.color, pattern or "solid", obj.box, "up")
    if new.shape == obj.shape:
        raise EditImpossible("replacing an object by the same shape")
    return _swap(scene, index, new)


def change_background(scene: Scene, color: str, texture: str = "plain") -> Scene:
    if (color, texture) == (scene.background, scene.texture):
        raise EditImpossible("the background already looks like that")
    return replace(scene, background=color, texture=texture)


def set_style(scene: Scene, style: str) -> Scene:
    if style == scene.style or style == "none":
        raise EditImpossible(f"style {style!r} changes nothing")
    return replace(scene, style=style)


def set_environment(scene: Scene, environment: str) -> Scene:
    if environment == scene.environment or environment == "day":
        raise EditImpossible(f"environment {environment!r} changes nothing")
    return replace(scene, environment=environment)


def resize(scene: Scene, index: int, ratio: float) -> Scene:
    """Scale an object about its bottom centre, with the RESIZE brick's exact geometry."""
    obj = _obj(scene, index)
    box = scaled_box(obj.box, ratio)
    if box == obj.box or not box_free(scene, box, ignore=index):
        raise EditImpossible(f"resizing by {ratio} gives {box}, which does not fit")
    return _swap(scene, index, replace(obj, box=box))


def set_pose(scene: Scene, index: int, orientation: str) -> Scene:
    obj = _obj(scene, index)
    if obj.shape != "triangle":
        raise EditImpossible(f"a {obj.shape} looks the same in every orientation")
    if orientation == obj.orientation:
        raise EditImpossible("the object already points that way")
    return _swap(scene, index, replace(obj, orientation=orientation))


def outpaint(scene: Scene, left: float, right: float, top: float, bottom: float) -> Scene:
    le, re, te, be = side_extensions(scene.width, scene.height, left, right, top, bottom)
    if min(le, re, te, be) < 0 or le + re + te + be == 0:
        raise EditImpossible("outpainting must add pixels and remove none")
    objects = tuple(replace(o, box=(o.box[0] + le, o.box[1] + te, o.box[2], o.box[3])) for o in scene.objects)
    return replace(
        scene,
        width=scene.width + le + re,
        height=scene.height + te + be,
        objects=objects,
        origin=(scene.origin[0] + le, scene.origin[1] + te),
    )


def extract(scene: Scene, index: int) -> np.ndarray:
    """The extraction target: the object's pixels as an RGBA cut-out (transparent elsewhere)."""
    _obj(scene, index)
    image, labels = render_layers(scene)
    alpha = np.where(labels == index, 255, 0).astype(np.uint8)
    return np.dstack([image, alpha])


VOCABULARY = {
    "shapes": SHAPES,
    "colors": tuple(COLORS),
    "patterns": PATTERNS,
    "backgrounds": tuple(BACKGROUNDS),
    "textures": TEXTURES,
    "environments": ENVIRONMENTS,
    "styles": STYLES,
    "orientations": ORIENTATIONS,
}
