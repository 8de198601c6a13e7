"""Referring expressions for shapes-world objects: generate unique ones, and resolve them back.

Expressions use colour, pattern, shape, size and position ("the small blue square on the left",
"the second circle from the left"). ``candidates`` lists every expression that picks out exactly one
object; ``resolve`` interprets an expression against a scene (used by the oracle bricks and by tests that
check every generated expression points at the intended object).
"""

from __future__ import annotations

import re

from .shapes import COLORS, PATTERNS, SHAPES, SIZES, Obj, Scene

ORDINALS = ("first", "second", "third", "fourth")
SIDES = {"left": (0, 1), "right": (0, -1), "top": (1, 1), "bottom": (1, -1)}  # axis, sign
SIDE_PHRASE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom"}
MIN_SEPARATION = 4  # pixels between centres for "on the left" to be unambiguous


def _centre(o: Obj) -> tuple[float, float]:
    x, y, w, h = o.box
    return x + w / 2, y + h / 2


def _noun(o: Obj, color: bool, pattern: bool, size: bool, base: int = 64) -> str:
    words = []
    if size:
        words.append(o.size_name(base))
    if color:
        words.append(o.color)
    if pattern and o.pattern != "solid":
        words.append(o.pattern)
    words.append(o.shape)
    return " ".join(words)


def _matching(scene: Scene, o: Obj, color: bool, pattern: bool, size: bool) -> list[int]:
    return [
        i
        for i, p in enumerate(scene.objects)
        if p.shape == o.shape
        and (not color or p.color == o.color)
        and (not pattern or p.pattern == o.pattern)
        and (not size or p.size_name(scene.base_size) == o.size_name(scene.base_size))
    ]


def _extreme(scene: Scene, group: list[int], side: str) -> int | None:
    """The object of ``group`` furthest towards ``side``, if it is clearly so."""
    axis, sign = SIDES[side]
    ranked = sorted(group, key=lambda i: sign * _centre(scene.objects[i])[axis])
    if len(ranked) < 2:
        return ranked[0] if ranked else None
    a, b = (_centre(scene.objects[ranked[0]])[axis], _centre(scene.objects[ranked[1]])[axis])
    return ranked[0] if abs(a - b) >= MIN_SEPARATION else None


def _ordinal(scene: Scene, group: list[int], index: int, side: str) -> int | None:
    axis, sign = SIDES[side]
    ranked = sorted(group, key=lambda i: sign * _centre(scene.objects[i])[axis])
    pos = [sign * _centre(scene.objects[i])[axis] for i in ranked]
    if any(b - a < MIN_SEPARATION for a, b in zip(pos, pos[1:])):
        return None
    k = ranked.index(index)
    return k if k < len(ORDINALS) else None


def candidates(scene: Scene, index: int) -> list[str]:
    """Every expression (without a leading 'the') that picks out object ``index`` and no other."""
    o = scene.objects[index]
    out: list[str] = []
    for color, pattern, size in (
        (False, False, False),
        (True, False, False),
        (False, True, False),
        (True, True, False),
        (False, False, True),
        (True, False, True),
    ):
        if pattern and o.pattern == "solid":
            continue
        group = _matching(scene, o, color, pattern, size)
        noun = _noun(o, color, pattern, size, scene.base_size)
        if group == [index]:
            out.append(noun)
        elif len(group) > 1 and not size:
            for side in SIDES:
                if _extreme(scene, group, side) == index:
                    out.append(f"{noun} {SIDE_PHRASE[side]}")
            if not color and not pattern:
                for side in ("left", "top"):
                    k = _ordinal(scene, group, index, side)
                    if k is not None:
                        out.append(f"{ORDINALS[k]} {noun} from the {side}")
    return out


_WORD = re.compile(r"[a-z]+")


def resolve(scene: Scene, expression: str) -> int | None:
    """The index of the one object the expression refers to, or None if it matches none or several."""
    words = _WORD.findall(expression.lower())
    shapes = [w for w in words if w in SHAPES or w.rstrip("s") in SHAPES]
    if not shapes:
        return None
    shape = shapes[0] if shapes[0] in SHAPES else shapes[0].rstrip("s")
    group = [i for i, o in enumerate(scene.objects) if o.shape == shape]
    for w in words:
        if w in COLORS:
            group = [i for i in group if scene.objects[i].color == w]
        elif w in PATTERNS:
            group = [i for i in group if scene.objects[i].pattern == w]
        elif w in SIZES:
            group = [i for i in group if scene.objects[i].size_name(scene.base_size) == w]
    ordinal = next((ORDINALS.index(w) for w in words if w in ORDINALS), None)
    side = None
    for w in words:
        if w in SIDES:
            side = w
    if ordinal is not None and side is not None:
        axis, sign = SIDES[side]
        ranked = sorted(group, key=lambda i: sign * _centre(scene.objects[i])[axis])
        if ordinal >= len(ranked):
            return None
        pos = [sign * _centre(scene.objects[i])[axis] for i in ranked[max(0, ordinal - 1) : ordinal + 2]]
        if any(b - a < MIN_SEPARATION for a, b in zip(pos, pos[1:])):
            return None  # level with a neighbour in the ranking: "the first ... from the left" is ambiguous
        return ranked[ordinal]
    if side is not None and len(group) > 1:
        return _extreme(scene, group, side)
    return group[0] if len(group) == 1 else None
