"""The shapes world: a scene graph, a deterministic renderer and per-object masks.

A scene is a background (colour, texture), an environment and a style (global transforms), and 1-4
non-overlapping objects (shape, colour, pattern, box, orientation). Rendering is pure integer numpy:
the same scene and size give a byte-identical image. Every transform is a function of a pixel's colour,
its *world* coordinate and the object label map, so expanding the canvas (outpainting) re-renders the old
area unchanged; objects keep a margin from the border for the same reason.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 190),
    "pink": (240, 120, 180),
    "cyan": (40, 200, 210),
}
PATTERNS = ("solid", "striped", "dotted", "checkered")
BACKGROUNDS = {
    "white": (245, 245, 245),
    "beige": (235, 220, 190),
    "gray": (195, 195, 195),
    "light blue": (190, 215, 240),
    "light green": (200, 235, 200),
    "lavender": (225, 210, 240),
}
TEXTURES = ("plain", "grid", "striped", "dotted")
ENVIRONMENTS = ("day", "night", "fog", "sunset", "snow")  # "day" is no transform
STYLES = ("none", "sketch", "pixel art", "pop art", "watercolor")
ORIENTATIONS = ("up", "right", "down", "left")  # visible for triangles only
SIZES = {"small": 0.19, "medium": 0.28, "large": 0.38}  # box side as a fraction of the canvas side
PLACES = {  # (column, row) of a 3x3 grid
    "top left": (0, 0),
    "top": (1, 0),
    "top right": (2, 0),
    "left": (0, 1),
    "center": (1, 1),
    "right": (2, 1),
    "bottom left": (0, 2),
    "bottom": (1, 2),
    "bottom right": (2, 2),
}
MARGIN = 2  # objects never touch the canvas border


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    pattern: str = "solid"
    box: tuple[int, int, int, int] = (0, 0, 1, 1)  # x, y, w, h in canvas pixels
    orientation: str = "up"

    def __post_init__(self):
        if self.shape not in SHAPES or self.color not in COLORS or self.pattern not in PATTERNS:
            raise ValueError(f"unknown object attributes {self.shape!r}, {self.color!r}, {self.pattern!r}")
        if self.orientation not in ORIENTATIONS:
            raise ValueError(f"unknown orientation {self.orientation!r}")
        object.__setattr__(self, "box", tuple(int(v) for v in self.box))

    def size_name(self, base: int = 64) -> str:
        """The size class nearest to this object's box, relative to the scene's original side ``base``."""
        side = max(self.box[2], self.box[3])
        return min(SIZES, key=lambda k: abs(SIZES[k] * base - side))

    def describe(self, size: bool = False, base: int = 64) -> str:
        """'red striped circle', 'blue triangle pointing left' (solid and upright are not spoken)."""
        words = ([self.size_name(base)] if size else []) + [self.color]
        if self.pattern != "solid":
            words.append(self.pattern)
        words.append(self.shape)
        if self.shape == "triangle" and self.orientation != "up":
            words.append(f"pointing {self.orientation}")
        return " ".join(words)


@dataclass(frozen=True)
class Scene:
    width: int
    height: int
    background: str = "white"
    texture: str = "plain"
    environment: str = "day"
    style: str = "none"
    objects: tuple[Obj, ...] = field(default_factory=tuple)
    origin: tuple[int, int] = (0, 0)  # canvas position of the world origin (moves when outpainting)
    base_size: int = 64  # the side the scene was sampled at: size words and the sunset gradient scale with it

    def __post_init__(self):
        if self.background not in BACKGROUNDS or self.texture not in TEXTURES:
            raise ValueError(f"unknown background {self.background!r} / texture {self.texture!r}")
        if self.environment not in ENVIRONMENTS or self.style not in STYLES:
            raise ValueError(f"unknown environment {self.environment!r} / style {self.style!r}")
        object.__setattr__(self, "objects", tuple(self.objects))
        object.__setattr__(self, "origin", tuple(int(v) for v in self.origin))

    def with_objects(self, objects) -> Scene:
        return replace(self, objects=tuple(objects))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["objects"] = [asdict(o) for o in self.objects]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        d = dict(d)
        d["objects"] = tuple(Obj(**{**o, "box": tuple(o["box"])}) for o in d.get("objects", ()))
        d["origin"] = tuple(d.get("origin", (0, 0)))
        d.setdefault("base_size", 64)
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> Scene:
        return cls.from_dict(json.loads(text))

    def background_phrase(self) -> str:
        return background_phrase(self.background, self.texture)


def background_phrase(color: str, texture: str) -> str:
    return color if texture == "plain" else f"{color} {texture}"


def shape_mask(obj: Obj, height: int, width: int) -> np.ndarray:
    """Boolean mask of an object on a canvas. Every shape touches all four sides of its box."""
    x, y, w, h = obj.box
    out = np.zeros((height, width), dtype=bool)
    x0, y0, x1, y1 = max(0, x), max(0, y), min(width, x + w), min(height, y + h)
    if x1 <= x0 or y1 <= y0:
        return out
    # Pixel-centre coordinates in [0, 1] across the box, computed in integers-over-floats once.
    u = (np.arange(x0, x1) - x + 0.5)[None, :] / w
    v = (np.arange(y0, y1) - y + 0.5)[:, None] / h
    half_u = 0.5 / w
    half_v = 0.5 / h
    if obj.shape == "square":
        m = np.ones((y1 - y0, x1 - x0), dtype=bool)
    elif obj.shape == "circle":
        m = ((u - 0.5) / (0.5 + half_u)) ** 2 + ((v - 0.5) / (0.5 + half_v)) ** 2 <= 1.0
    elif obj.shape == "diamond":
        m = np.abs(u - 0.5) / (0.5 + half_u) + np.abs(v - 0.5) / (0.5 + half_v) <= 1.0
    elif obj.shape == "cross":
        m = (np.abs(u - 0.5) <= 1 / 6 + half_u) | (np.abs(v - 0.5) <= 1 / 6 + half_v)
    elif obj.shape == "triangle":
        slack = max(half_u, half_v)  # widen the apex by half a pixel so it lands on the box edge
        if obj.orientation == "up":
            m = np.abs(u - 0.5) <= 0.5 * v + slack
        elif obj.orientation == "down":
            m = np.abs(u - 0.5) <= 0.5 * (1.0 - v) + slack
        elif obj.orientation == "left":
            m = np.abs(v - 0.5) <= 0.5 * u + slack
        else:
            m = np.abs(v - 0.5) <= 0.5 * (1.0 - u) + slack
    else:  # pragma: no cover - guarded by Obj.__post_init__
        raise ValueError(obj.shape)
    out[y0:y1, x0:x1] = np.broadcast_to(m, (y1 - y0, x1 - x0))
    return out


def _darken(color, amount: int) -> np.ndarray:
    return np.clip(np.array(color, dtype=np.int32) - amount, 0, 255)


def _texture_mask(texture: str, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    if texture == "grid":
        return (X % 8 == 0) | (Y % 8 == 0)
    if texture == "striped":
        return (X + Y) % 8 < 2
    if texture == "dotted":
        return (X % 8 >= 3) & (X % 8 <= 4) & (Y % 8 >= 3) & (Y % 8 <= 4)
    return np.zeros(np.broadcast(X, Y).shape, dtype=bool)


def _pattern_mask(pattern: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if pattern == "striped":
        return (v // 2) % 2 == 1
    if pattern == "dotted":
        return (u % 5 >= 1) & (u % 5 <= 2) & (v % 5 >= 1) & (v % 5 <= 2)
    if pattern == "checkered":
        return ((u // 3) + (v // 3)) % 2 == 1
    return np.zeros(np.broadcast(u, v).shape, dtype=bool)


def render_layers(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """(image HxWx3 uint8, labels HxW int16 with -1 for background and i for object i)."""
    H, W = scene.height, scene.width
    X = (np.arange(W, dtype=np.int64) - scene.origin[0])[None, :]
    Y = (np.arange(H, dtype=np.int64) - scene.origin[1])[:, None]
    img = np.empty((H, W, 3), dtype=np.int32)
    img[:] = BACKGROUNDS[scene.background]
    img[_texture_mask(scene.texture, X, Y)] = _darken(BACKGROUNDS[scene.background], 35)
    labels = np.full((H, W), -1, dtype=np.int16)
    for i, obj in enumerate(scene.objects):
        m = shape_mask(obj, H, W)
        if not m.any():
            continue
        u = np.arange(W, dtype=np.int64)[None, :] - obj.box[0]
        v = np.arange(H, dtype=np.int64)[:, None] - obj.box[1]
        second = _pattern_mask(obj.pattern, u, v)
        color = np.array(COLORS[obj.color], dtype=np.int32)
        layer = np.where(second[:, :, None], color // 2, color) if obj.pattern != "solid" else color
        img[m] = np.broadcast_to(layer, (H, W, 3))[m]
        labels[m] = i
    img = _environment(img, scene.environment, X, Y, scene.base_size)
    img = _style(img, scene.style, X, Y, labels)
    return np.clip(img, 0, 255).astype(np.uint8), labels


def render(scene: Scene) -> np.ndarray:
    return render_layers(scene)[0]


def object_masks(scene: Scene) -> list[np.ndarray]:
    """Visible mask of each object (objects do not overlap, so these are whole shapes)."""
    labels = render_layers(scene)[1]
    return [labels == i for i in range(len(scene.objects))]


def _environment(img: np.ndarray, env: str, X: np.ndarray, Y: np.ndarray, base: int = 64) -> np.ndarray:
    if env == "night":
        return (img * 2) // 5 + np.array([10, 15, 50])
    if env == "fog":
        return (img * 45 + np.array([225, 225, 230]) * 55) // 100
    if env == "sunset":
        t = np.broadcast_to(np.clip(Y, 0, base)[:, :, None], img.shape[:2] + (1,))
        top, bottom = np.array([250, 120, 50]), np.array([150, 60, 120])
        tint = (top * (base - t) + bottom * t) // base
        return (img * 7 + tint * 3) // 10
    if env == "snow":
        flakes = ((X * 73) ^ (Y * 151)) % 29 == 0
        out = (img * 85 + 255 * 15) // 100
        out[np.broadcast_to(flakes, img.shape[:2])] = 255
        return out
    return img


def _style(img: np.ndarray, style: str, X: np.ndarray, Y: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if style == "sketch":
        out = np.full_like(img, 250)
        out[labels >= 0] = 232
        edge = np.zeros(labels.shape, dtype=bool)
        dx = labels[:, 1:] != labels[:, :-1]
        dy = labels[1:, :] != labels[:-1, :]
        edge[:, 1:] |= dx
        edge[:, :-1] |= dx
        edge[1:, :] |= dy
        edge[:-1, :] |= dy
        out[edge] = 30
        return out
    if style == "pixel art":
        H, W = labels.shape
        cols = np.clip(np.arange(W) - (X[0] % 4), 0, W - 1)
        rows = np.clip(np.arange(H) - (Y[:, 0] % 4), 0, H - 1)
        return img[rows][:, cols]
    if style == "pop art":
        return np.where(img > 120, 255, 0) * 9 // 10 + 20
    if style == "watercolor":
        grain = (((X * 31) ^ (Y * 17)) % 13 - 6)[:, :, None] if X.ndim == 2 else 0
        return (img * 6 + 255 * 4) // 10 + grain
    return img


# --- geometry helpers shared by scene sampling and edits ---------------------------------------------


def size_px(size: str, canvas: int = 64) -> int:
    return max(6, int(round(SIZES[size] * canvas)))


def place_box(place: str, size: str, width: int, height: int, base: int | None = None) -> tuple[int, int, int, int]:
    """The box of a new object of a named size at a named place (the centre of a 3x3 grid cell); sizes are
    relative to ``base`` (the scene's original side), else to the canvas."""
    col, row = PLACES[place]
    side = size_px(size, base or min(width, height))
    cx = MARGIN + (2 * col + 1) * (width - 2 * MARGIN) // 6
    cy = MARGIN + (2 * row + 1) * (height - 2 * MARGIN) // 6
    x = min(max(MARGIN, cx - side // 2), width - MARGIN - side)
    y = min(max(MARGIN, cy - side // 2), height - MARGIN - side)
    return x, y, side, side


def boxes_overlap(a, b, gap: int = 2) -> bool:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    return not (ax + aw + gap <= bx or bx + bw + gap <= ax or ay + ah + gap <= by or by + bh + gap <= ay)


def box_inside(box, width: int, height: int) -> bool:
    x, y, w, h = box
    return x >= MARGIN and y >= MARGIN and x + w <= width - MARGIN and y + h <= height - MARGIN and w > 0 and h > 0


def box_free(scene: Scene, box, ignore: int | None = None) -> bool:
    """Inside the canvas margin and clear of every other object."""
    return box_inside(box, scene.width, scene.height) and not any(
        boxes_overlap(box, o.box) for i, o in enumerate(scene.objects) if i != ignore
    )


def sample_scene(
    rng: np.random.Generator, size: int = 64, max_objects: int = 4, environment_rate: float = 0.15
) -> Scene:
    """A random scene with 1..max_objects non-overlapping objects at jittered 3x3 grid positions."""
    background = str(rng.choice(list(BACKGROUNDS)))
    texture = str(rng.choice(TEXTURES, p=[0.55, 0.15, 0.15, 0.15]))
    environment = str(rng.choice(ENVIRONMENTS[1:])) if rng.random() < environment_rate else "day"
    n = int(rng.integers(1, max_objects + 1))
    objects: list[Obj] = []
    cells = rng.permutation(len(PLACES))
    jitter = max(1, size // 24)
    for cell in cells:
        if len(objects) == n:
            break
        place = list(PLACES)[int(cell)]
        for size_name in rng.permutation(list(SIZES)):
            x, y, w, h = place_box(place, str(size_name), size, size)
            x += int(rng.integers(-jitter, jitter + 1))
            y += int(rng.integers(-jitter, jitter + 1))
            box = (x, y, w, h)
            if box_inside(box, size, size) and not any(boxes_overlap(box, o.box) for o in objects):
                shape = str(rng.choice(SHAPES))
                orientation = str(rng.choice(ORIENTATIONS)) if shape == "triangle" and rng.random() < 0.3 else "up"
                objects.append(
                    Obj(
                        shape,
                        str(rng.choice(list(COLORS))),
                        str(rng.choice(PATTERNS, p=[0.55, 0.15, 0.15, 0.15])),
                        box,
                        orientation,
                    )
                )
                break
    return Scene(size, size, background, texture, environment, "none", tuple(objects), base_size=size)


def caption(scene: Scene) -> str:
    """A plain description of the scene: objects left to right, background, environment, style."""
    objs = sorted(scene.objects, key=lambda o: (o.box[0] + o.box[2] / 2, o.box[1]))
    parts = [f"a {o.describe(size=True, base=scene.base_size)}" for o in objs] or ["nothing"]
    text = ", ".join(parts) + f" on a {scene.background_phrase()} background"
    if scene.environment != "day":
        text += {"night": " at night", "fog": " in fog", "sunset": " at sunset", "snow": " in snow"}[scene.environment]
    if scene.style != "none":
        text += f", {scene.style} style"
    return text
