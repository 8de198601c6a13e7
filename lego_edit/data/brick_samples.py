"""Training samples for every model-backed brick family, drawn from shapes-world scenes.

Families and their fields (images are numpy arrays, the rest goes into the sample's JSON):
  segmentation  image, mask, hint (MASK-SEG only), | task (RES/SOS/MASK-SEG), text
                attributes (per-pixel classes)    |
  placement     image                             | prompt ("add a red circle on the left"), box [x1, y1, x2, y2]
  captioning    image                             | caption
  edit          source, mask, target, preimage?   | brick, prompt, style?, score?
  critic        source, candidate                 | instruction, label (1 right edit, 0 wrong), kind, shows
The inputs are exactly what the bricks receive at run time (the same prompt wording, masks from the same
geometry), so a brick trained here serves the Builder's GT workflows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..bricks.functions import expand_canvas, fastinpaint, object_region, turn_object
from ..layout import EDIT_BRICK_NAMES
from . import edits, phrases
from .instructions import ENV_PROMPT, make_instruction
from .referring import candidates
from .shapes import (
    BACKGROUNDS,
    COLORS,
    ENVIRONMENTS,
    ORIENTATIONS,
    PATTERNS,
    PLACES,
    SHAPES,
    SIZES,
    STYLES,
    TEXTURES,
    Obj,
    Scene,
    background_phrase,
    caption,
    render_layers,
)

EDIT_BRICKS = EDIT_BRICK_NAMES  # the edit bricks, as lego_edit.layout names them
NO_CHANGE = "nothing changed"
FAMILIES = ("segmentation", "placement", "captioning", "edit", "critic")


@dataclass
class Sample:
    key: str
    images: dict[str, np.ndarray]
    meta: dict


def _pick(rng, items):
    items = list(items)
    return items[int(rng.integers(len(items)))]


def _mask(labels: np.ndarray, index: int | None = None) -> np.ndarray:
    m = labels >= 0 if index is None else labels == index
    return np.where(m, 255, 0).astype(np.uint8)


def _box_mask(shape, box) -> np.ndarray:
    x, y, w, h = box
    out = np.zeros(shape, dtype=np.uint8)
    out[max(0, y) : y + h, max(0, x) : x + w] = 255
    return out


ATTRIBUTE_CLASSES = (len(SHAPES) + 1, len(COLORS) + 1, len(PATTERNS) + 1, len(SIZES) + 1)  # 0 = background


def attribute_maps(scene: Scene, labels: np.ndarray) -> np.ndarray:
    """HxWx4 uint8: each pixel's object shape, colour, pattern and size class (+1; 0 on the background).

    Dense auxiliary targets for the segmentation model: learning what every pixel is makes learning which
    object an expression names far faster than the expression's mask alone (see SegmentationConfig.aux_classes).
    """
    table = np.zeros((len(scene.objects) + 1, 4), dtype=np.uint8)
    for i, o in enumerate(scene.objects):
        table[i + 1] = (
            SHAPES.index(o.shape) + 1,
            list(COLORS).index(o.color) + 1,
            PATTERNS.index(o.pattern) + 1,
            list(SIZES).index(o.size_name(scene.base_size)) + 1,
        )
    return table[labels.astype(np.int64) + 1]


def segmentation_samples(scene: Scene, rng, n: int) -> Iterator[tuple[dict, dict]]:
    """70% RES (a referring expression), 15% SOS (all salient objects), 15% MASK-SEG (a rough user box)."""
    image, labels = render_layers(scene)
    attributes = attribute_maps(scene, labels)
    for _ in range(n):
        r = rng.random()
        if r < 0.15 or not scene.objects:
            yield {"image": image, "mask": _mask(labels), "attributes": attributes}, {"task": "SOS", "text": ""}
            continue
        index = int(rng.integers(len(scene.objects)))
        if r < 0.3:  # a rough user mask around the object: its box grown by a few pixels
            x, y, w, h = scene.objects[index].box
            g = [int(v) for v in rng.integers(0, 5, size=4)]
            hint = _box_mask(labels.shape, (x - g[0], y - g[1], w + g[0] + g[2], h + g[1] + g[3]))
            yield (
                {"image": image, "mask": _mask(labels, index), "hint": hint, "attributes": attributes},
                {"task": "MASK-SEG", "text": ""},
            )
            continue
        options = candidates(scene, index)
        if options:
            yield (
                {"image": image, "mask": _mask(labels, index), "attributes": attributes},
                {"task": "RES", "text": _pick(rng, options)},
            )


def placement_samples(scene: Scene, rng, n: int) -> Iterator[tuple[dict, dict]]:
    image = render_layers(scene)[0]
    for _ in range(n):
        size = _pick(rng, SIZES)
        free = [
            p
            for p in PLACES
            if edits.box_free(scene, edits.place_box(p, size, scene.width, scene.height, scene.base_size))
        ]
        if not free:
            return
        place = _pick(rng, free)
        new = Obj(_pick(rng, SHAPES), _pick(rng, COLORS), _pick(rng, PATTERNS) if rng.random() < 0.3 else "solid")
        o = f"a {size} {new.describe()}" if size != "medium" else f"a {new.describe()}"
        x, y, w, h = edits.place_box(place, size, scene.width, scene.height, scene.base_size)
        yield {"image": image}, {"prompt": f"add {o} {phrases.AT[place]}", "box": [x, y, x + w - 1, y + h - 1]}


def captioning_samples(scene: Scene, rng, n: int) -> Iterator[tuple[dict, dict]]:
    yield {"image": render_layers(scene)[0]}, {"caption": caption(scene)}


def _edit_sample(brick: str, scene: Scene, rng) -> tuple[dict, dict] | None:
    image, labels = render_layers(scene)
    full = np.full(labels.shape, 255, dtype=np.uint8)
    objs = scene.objects
    try:
        if brick == "FILL":
            kind = _pick(rng, ("add", "add", "replace", "resize", "outpaint"))
            if kind == "outpaint":
                side = _pick(rng, phrases.OUTPAINT_SIDES)
                ratios = phrases.OUTPAINT_SIDES[side]
                canvas, mask = expand_canvas(None, image, *ratios)
                target = render_layers(edits.outpaint(scene, *ratios))[0]
                return (
                    {"source": canvas, "mask": mask, "target": target, "preimage": image},
                    {"brick": brick, "prompt": caption(scene), "kind": kind},
                )
            if kind == "add":
                size = _pick(rng, SIZES)
                place = _pick(rng, PLACES)
                new = Obj(
                    _pick(rng, SHAPES), _pick(rng, COLORS), _pick(rng, PATTERNS) if rng.random() < 0.3 else "solid"
                )
                after = edits.add(scene, new, place, size)
                box = after.objects[-1].box
                return (
                    {"source": image, "mask": _box_mask(labels.shape, box), "target": render_layers(after)[0]},
                    {"brick": brick, "prompt": new.describe(), "kind": kind},
                )
            if not objs:
                return None
            index = int(rng.integers(len(objs)))
            obj = objs[index]
            if kind == "replace":
                after = edits.replace_object(
                    scene,
                    index,
                    _pick(rng, [s for s in SHAPES if s != obj.shape]),
                    _pick(rng, COLORS) if rng.random() < 0.5 else obj.color,
                )
                new = after.objects[index]
                return (
                    {"source": image, "mask": _box_mask(labels.shape, obj.box), "target": render_layers(after)[0]},
                    {"brick": brick, "prompt": new.describe(), "kind": kind},
                )
            ratio = _pick(rng, phrases.RESIZE_WORDS)
            after = edits.resize(scene, index, ratio)
            clean = render_layers(edits.remove(scene, index))[0]
            return (
                {
                    "source": clean,
                    "mask": _box_mask(labels.shape, after.objects[index].box),
                    "target": render_layers(after)[0],
                },
                {"brick": brick, "prompt": obj.describe(), "kind": kind},
            )
        if brick in ("RCM", "INPAINT"):
            if not objs:
                return None
            index = int(rng.integers(len(objs)))
            mask = _mask(labels, index)
            if brick == "INPAINT":
                pre = fastinpaint(None, image, mask)
                after = edits.remove(scene, index)
                return (
                    {"source": image, "mask": mask, "target": render_layers(after)[0], "preimage": pre["image"]},
                    {"brick": brick, "prompt": "", "score": round(pre["score"], 4)},
                )
            obj = objs[index]
            kind = _pick(rng, ("color", "color", "pattern", "both"))
            color = _pick(rng, [c for c in COLORS if c != obj.color]) if kind != "pattern" else None
            pattern = _pick(rng, [p for p in PATTERNS if p != obj.pattern]) if kind != "color" else None
            after = edits.recolor(scene, index, color, pattern)
            return (
                {"source": image, "mask": mask, "target": render_layers(after)[0]},
                {"brick": brick, "prompt": " ".join(w for w in (color, pattern) if w)},
            )
        if brick == "CBG":
            color, texture = _pick(
                rng, [(c, t) for c in BACKGROUNDS for t in TEXTURES if (c, t) != (scene.background, scene.texture)]
            )
            after = edits.change_background(scene, color, texture)
            return (
                {"source": image, "mask": 255 - _mask(labels), "target": render_layers(after)[0]},
                {"brick": brick, "prompt": f"change the background to {background_phrase(color, texture)}"},
            )
        if brick == "STYLE":
            style = _pick(rng, STYLES[1:])
            after = edits.set_style(scene, style)
            return (
                {"source": image, "mask": full, "target": render_layers(after)[0]},
                {"brick": brick, "prompt": caption(scene), "style": f"{style} style"},
            )
        if brick == "ENV":
            env = _pick(rng, [e for e in ENVIRONMENTS[1:] if e != scene.environment])
            after = edits.set_environment(scene, env)
            return (
                {"source": image, "mask": full, "target": render_layers(after)[0]},
                {"brick": brick, "prompt": ENV_PROMPT[env]},
            )
        if brick == "POSE":
            pool = [i for i, o in enumerate(objs) if o.shape == "triangle" and candidates(scene, i)]
            if not pool:
                return None
            index = _pick(rng, pool)
            d = _pick(rng, [o for o in ORIENTATIONS if o != objs[index].orientation])
            after = edits.set_pose(scene, index, d)
            expr = _pick(rng, candidates(scene, index))
            obj_mask = _mask(labels, index)
            return (
                {
                    "source": image,
                    "mask": object_region(obj_mask),
                    "target": render_layers(after)[0],
                    "preimage": turn_object(image, obj_mask, d),
                },
                {"brick": brick, "prompt": f"make the {expr} point {d}"},
            )
    except edits.EditImpossible:
        return None
    raise ValueError(f"unknown edit brick {brick!r}")


def edit_samples(scene: Scene, rng, n: int, bricks=EDIT_BRICKS) -> Iterator[tuple[dict, dict]]:
    """``n`` samples per edit brick (fewer when the scene cannot take that edit, e.g. POSE without a triangle)."""
    for brick in bricks:
        for _ in range(n):
            for _attempt in range(4):
                s = _edit_sample(brick, scene, rng)
                if s is not None:
                    yield s
                    break


def critic_samples(
    scene: Scene, rng, n: int, instruction: dict, source: np.ndarray, target: np.ndarray
) -> Iterator[tuple[dict, dict]]:
    """One right edit and ``n`` wrong ones for an instruction: no edit, the same kind of edit with other
    parameters, or another kind of edit. ``shows`` says in words what each candidate's edit really is (the
    instruction it fulfils): training the critic to say it gives it far more signal than yes/no alone. Each
    candidate carries its PSNR to the target and its edit success as the evaluation measures them."""
    from ..evaluation.edit_success import score_edit
    from ..workflow.values import rgb

    text = instruction["instruction"]

    def scored(candidate) -> dict:
        s = score_edit(source, candidate, target)
        return {"psnr": round(s.psnr, 3), "success": bool(s.success)}

    yield (
        {"source": source, "candidate": rgb(target)},
        {"instruction": text, "label": 1, "kind": "target", "shows": text, **scored(target)},
    )
    for _ in range(n):
        r = rng.random()
        wrong, shows = None, NO_CHANGE
        if r < 0.25:
            wrong, kind = source, "no_edit"
        else:
            others = [
                c
                for c in ("remove", "recolour", "add", "background", "environment", "style")
                if c != instruction["category"]
            ]
            category = instruction["category"] if r < 0.75 else _pick(rng, others)
            kind = "same_category" if r < 0.75 else "other_category"
            for _attempt in range(4):
                other = make_instruction(scene, category, rng, "gt")
                if other is not None and not np.array_equal(other.target, target):
                    wrong, shows = rgb(other.target), other.text
                    break
            if wrong is None:
                wrong, kind = source, "no_edit"
        yield (
            {"source": source, "candidate": wrong},
            {"instruction": text, "label": 0, "kind": kind, "shows": shows, **scored(wrong)},
        )
