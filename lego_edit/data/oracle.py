"""Oracle bricks: model-backed bricks answered from the shapes world's scene graphs.

For tests and for the evaluation's upper-bound row only. The oracle remembers the scene behind every image
it has seen or produced (by a hash of the pixels) and answers each brick by editing that scene and
re-rendering, compositing inside the brick's mask exactly as the real bricks paste back. Executing a GT
workflow with these bricks must reproduce the GT target image exactly.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from ..bricks import functions
from ..bricks.functions import expand_canvas, mask_bbox
from ..bricks.registry import BrickRegistry, default_registry
from ..workflow.errors import ExecutionError
from ..workflow.values import as_mask
from . import edits
from .phrases import AT
from .referring import resolve
from .shapes import (
    BACKGROUNDS,
    COLORS,
    ENVIRONMENTS,
    PATTERNS,
    SHAPES,
    SIZES,
    STYLES,
    TEXTURES,
    Obj,
    Scene,
    caption,
    render_layers,
)

_WORDS = re.compile(r"[a-z]+")


def _key(image: np.ndarray) -> bytes:
    return hashlib.blake2b(image.tobytes() + repr(image.shape).encode(), digest_size=16).digest()


def _cutout(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.dstack([image[:, :, :3], mask])


class ShapesOracle:
    def __init__(self):
        self._scenes: dict[bytes, Scene] = {}
        self._canvases: dict[bytes, Scene] = {}
        self._cutouts: dict[bytes, tuple[Scene, int]] = {}  # RES cut-outs: the scene and the object cut out
        self._resized: dict[bytes, Scene] = {}  # RESIZE's cut-outs of them: the scene with the object resized

    def remember(self, scene: Scene) -> np.ndarray:
        image = render_layers(scene)[0]
        self._scenes[_key(image)] = scene
        return image

    def scene_of(self, image: np.ndarray) -> Scene:
        scene = self._scenes.get(_key(np.ascontiguousarray(image)))
        if scene is None:
            raise ExecutionError("oracle: this image is not a known shapes-world scene")
        return scene

    def _finish(self, image: np.ndarray, mask: np.ndarray | None, scene: Scene) -> np.ndarray:
        """Composite the re-rendered scene inside the mask and remember the result's scene."""
        new = render_layers(scene)[0]
        out = new if mask is None else np.where(mask[:, :, None] > 0, new, image[:, :, :3])
        out = np.ascontiguousarray(out)
        if np.array_equal(out, new):
            self._scenes[_key(out)] = scene
        return out

    def _covered(self, scene: Scene, mask: np.ndarray) -> list[int]:
        labels = render_layers(scene)[1]
        m = mask > 0
        return [
            i
            for i in range(len(scene.objects))
            if (labels == i).any() and (m & (labels == i)).sum() * 2 >= (labels == i).sum()
        ]

    def _best_overlap(self, scene: Scene, mask: np.ndarray) -> int:
        labels = render_layers(scene)[1]
        m = mask > 0
        scores = [(m & (labels == i)).sum() for i in range(len(scene.objects))]
        if not scores or max(scores) == 0:
            raise ExecutionError("oracle: the mask covers no object")
        return int(np.argmax(scores))

    # --- the bricks ------------------------------------------------------------------------------
    def res(self, ctx, image, prompt):
        scene = self.scene_of(image)
        index = resolve(scene, prompt)
        if index is None:
            raise ExecutionError(f"oracle: {prompt!r} does not pick out exactly one object")
        mask = np.where(render_layers(scene)[1] == index, 255, 0).astype(np.uint8)
        cut = _cutout(image, mask)
        self._cutouts[_key(cut)] = (scene, index)
        return {"mask": mask, "image": cut}

    def resize(self, ctx, mask=None, image=None, ratio=1.0):
        """A RES cut-out is scaled by re-rendering its object at the new size (the function brick's geometry);
        anything else goes to the function brick."""
        known = None if image is None else self._cutouts.get(_key(np.ascontiguousarray(image)))
        if known is None:
            return functions.resize(ctx, mask=mask, image=image, ratio=ratio)
        scene, index = known
        try:
            grown = edits.resize(scene, index, float(ratio))
        except edits.EditImpossible as e:
            raise ExecutionError(f"oracle: {e}") from e
        rendered, labels = render_layers(grown)
        cut = _cutout(rendered, np.where(labels == index, 255, 0).astype(np.uint8))
        self._resized[_key(cut)] = grown
        return {"image": cut}

    def compose(self, ctx, mask1=None, mask2=None, image1=None, image2=None):
        """The function brick; a resized cut-out laid over its scene's cleaned image gives the resized scene."""
        out = functions.compose(ctx, mask1=mask1, mask2=mask2, image1=image1, image2=image2)
        grown = None if image2 is None else self._resized.get(_key(np.ascontiguousarray(image2)))
        if grown is not None and np.array_equal(out["image"], render_layers(grown)[0]):
            self._scenes[_key(np.ascontiguousarray(out["image"]))] = grown
        return out

    def sos(self, ctx, image):
        mask = np.where(render_layers(self.scene_of(image))[1] >= 0, 255, 0).astype(np.uint8)
        return {"mask": mask, "image": _cutout(image, mask)}

    def mask_seg(self, ctx, image, mask):
        scene = self.scene_of(image)
        index = self._best_overlap(scene, as_mask(mask))
        out = np.where(render_layers(scene)[1] == index, 255, 0).astype(np.uint8)
        return {"mask": out, "image": _cutout(image, out)}

    def add_pred(self, ctx, image, prompt, mask=None):
        scene = self.scene_of(image)
        text = prompt.lower()
        place = next((p for p, phrase in sorted(AT.items(), key=lambda kv: -len(kv[1])) if phrase in text), "center")
        size = next((s for s in SIZES if re.search(rf"\b{s}\b", text)), "medium")
        x, y, w, h = edits.place_box(place, size, scene.width, scene.height, scene.base_size)
        out = np.zeros((scene.height, scene.width), dtype=np.uint8)
        out[y : y + h, x : x + w] = 255
        return {"mask": out}

    def cmi_pred(self, ctx, image, left_ratio=None, right_ratio=None, top_ratio=None, bottom_ratio=None):
        scene = self.scene_of(image)
        if left_ratio is None:
            return {"caption": caption(scene)}
        ratios = (left_ratio, right_ratio, top_ratio, bottom_ratio)
        canvas, mask = expand_canvas(ctx, image, *ratios)
        self._canvases[_key(canvas)] = edits.outpaint(scene, *ratios)
        return {"caption": caption(scene), "image": canvas, "mask": mask}

    def fill(self, ctx, image, mask, prompt, preimage=None):
        mask = as_mask(mask)
        grown = self._canvases.get(_key(np.ascontiguousarray(image)))
        if grown is not None:
            return {"image": self._finish(image, mask, grown)}
        scene = self.scene_of(image)
        words = _WORDS.findall(prompt.lower())
        shape = next((w for w in words if w in SHAPES), None)
        if shape is None:
            raise ExecutionError(f"oracle: {prompt!r} names no shape to draw")
        color = next((w for w in words if w in COLORS), "red")
        pattern = next((w for w in words if w in PATTERNS), "solid")
        pointing = re.search(r"pointing (up|down|left|right)", prompt.lower())
        orientation = pointing.group(1) if pointing and shape == "triangle" else "up"
        box = mask_bbox(mask > 0)
        if box is None:
            raise ExecutionError("oracle: FILL got an empty mask")
        keep = set(range(len(scene.objects))) - set(self._covered(scene, mask))
        new = Obj(shape, color, pattern, box, orientation)
        scene = scene.with_objects([o for i, o in enumerate(scene.objects) if i in keep] + [new])
        return {"image": self._finish(image, mask, scene)}

    def rcm(self, ctx, image, mask, prompt):
        mask = as_mask(mask)
        scene = self.scene_of(image)
        index = self._best_overlap(scene, mask)
        words = _WORDS.findall(prompt.lower())
        color = next((w for w in words if w in COLORS), None)
        pattern = next((w for w in words if w in PATTERNS), None)
        scene = edits.recolor(scene, index, color, pattern)
        return {"image": self._finish(image, mask, scene)}

    def inpaint(self, ctx, image, mask, preimage, score):
        mask = as_mask(mask)
        scene = self.scene_of(image)
        gone = set(self._covered(scene, mask))
        scene = scene.with_objects(o for i, o in enumerate(scene.objects) if i not in gone)
        return {"image": self._finish(image, mask, scene)}

    def cbg(self, ctx, image, mask, prompt):
        scene = self.scene_of(image)
        text = prompt.lower()
        color = next((c for c in sorted(BACKGROUNDS, key=len, reverse=True) if c in text), None)
        if color is None:
            raise ExecutionError(f"oracle: {prompt!r} names no background colour")
        rest = text.split(color, 1)[1]
        texture = next((t for t in TEXTURES[1:] if t in rest), "plain")
        return {"image": self._finish(image, as_mask(mask), edits.change_background(scene, color, texture))}

    def style(self, ctx, image, prompt, style, mask=None):
        name = style.lower().replace(" style", "").strip()
        if name not in STYLES:
            raise ExecutionError(f"oracle: unknown style {style!r}")
        scene = edits.set_style(self.scene_of(image), name)
        return {"image": self._finish(image, None if mask is None else as_mask(mask), scene)}

    def env(self, ctx, image, prompt):
        words = _WORDS.findall(prompt.lower())
        alias = {"foggy": "fog", "snowy": "snow", "dusk": "sunset"}
        env = next((alias.get(w, w) for w in words if alias.get(w, w) in ENVIRONMENTS), None)
        if env is None:
            raise ExecutionError(f"oracle: {prompt!r} names no environment")
        return {"image": self._finish(image, None, edits.set_environment(self.scene_of(image), env))}

    def pose(self, ctx, image, prompt):
        scene = self.scene_of(image)
        expression, _, direction = prompt.lower().rpartition(" point ")
        index = resolve(scene, expression)
        if index is None or direction.strip() not in ("up", "down", "left", "right"):
            raise ExecutionError(f"oracle: cannot read {prompt!r} as '<object> point <direction>'")
        return {"image": self._finish(image, None, edits.set_pose(scene, index, direction.strip()))}

    def registry(self, base: BrickRegistry | None = None) -> BrickRegistry:
        """A copy of ``base`` (default: the built-ins) with every model-backed brick answered by the oracle."""
        registry = (base or default_registry(plugins=False)).copy()
        for name, fn in {
            "RES": self.res,
            "SOS": self.sos,
            "MASK-SEG": self.mask_seg,
            "ADD-PRED": self.add_pred,
            "CMI-PRED": self.cmi_pred,
            "FILL": self.fill,
            "RCM": self.rcm,
            "INPAINT": self.inpaint,
            "CBG": self.cbg,
            "STYLE": self.style,
            "ENV": self.env,
            "POSE": self.pose,
            "RESIZE": self.resize,
            "COMPOSE": self.compose,
        }.items():
            registry.bind(name, fn, source="shapes oracle")
        return registry
