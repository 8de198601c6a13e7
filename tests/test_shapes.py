"""The shapes world: renderer, masks, styles, environments, edit operations, scene JSON, referring expressions."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
from data_fixtures import base_scene, random_scenes

from lego_edit.bricks.functions import scaled_box, side_extensions
from lego_edit.data import edits
from lego_edit.data.edits import EditImpossible
from lego_edit.data.phrases import OUTPAINT_SIDES
from lego_edit.data.referring import MIN_SEPARATION, candidates, resolve
from lego_edit.data.shapes import (
    BACKGROUNDS,
    COLORS,
    ENVIRONMENTS,
    ORIENTATIONS,
    SHAPES,
    STYLES,
    TEXTURES,
    Obj,
    Scene,
    object_masks,
    place_box,
    render,
    render_layers,
    shape_mask,
)
from lego_edit.imageio import encode_png

BEIGE = BACKGROUNDS["beige"]


# --- renderer ----------------------------------------------------------------------------------------------


def test_renderer_is_deterministic_to_the_png_byte():
    scenes = random_scenes(40, seed=11)
    scenes += [replace(s, style=st) for s, st in zip(scenes[:4], STYLES[1:])]
    for scene in scenes:
        first = encode_png(render(scene))
        again = encode_png(render(Scene.from_json(scene.to_json())))  # a fresh scene object, same graph
        assert first == again
        assert render(scene).dtype == np.uint8 and render(scene).shape == (scene.height, scene.width, 3)


def test_known_pixel_values():
    scene = Scene(
        64,
        64,
        "white",
        "grid",
        "day",
        "none",
        (
            Obj("square", "red", "solid", (10, 10, 12, 12)),
            Obj("square", "blue", "striped", (40, 40, 12, 12)),
        ),
    )
    img = render(scene)
    assert tuple(img[1, 1]) == (245, 245, 245)  # white background
    assert tuple(img[0, 5]) == (210, 210, 210)  # grid line at world y = 0: white darkened by 35
    assert tuple(img[5, 8]) == (210, 210, 210)  # grid line at world x = 8
    assert tuple(img[15, 15]) == (220, 40, 40)  # solid red object
    assert tuple(img[40, 45]) == (40, 80, 220)  # striped: rows 0-1 of the box in the colour
    assert tuple(img[42, 45]) == (20, 40, 110)  # rows 2-3 in half the colour
    assert tuple(img[44, 45]) == (40, 80, 220)


@pytest.mark.parametrize(
    "shape,orientation", [(s, o) for s in SHAPES for o in (ORIENTATIONS if s == "triangle" else ("up",))]
)
def test_every_shape_touches_all_four_sides_of_its_box(shape, orientation):
    for w, h in itertools.product(range(3, 41), repeat=2):
        if max(w, h) > 2 * min(w, h):
            continue
        x, y = 5, 7
        m = shape_mask(Obj(shape, "red", box=(x, y, w, h), orientation=orientation), 56, 56)
        ys, xs = np.nonzero(m)
        assert (xs.min(), xs.max(), ys.min(), ys.max()) == (x, x + w - 1, y, y + h - 1), (w, h)


def test_masks_per_object():
    for scene in random_scenes(60, seed=3):
        image, labels = render_layers(scene)
        masks = object_masks(scene)
        assert len(masks) == len(scene.objects)
        covered = np.zeros(labels.shape, dtype=int)
        for i, (obj, m) in enumerate(zip(scene.objects, masks)):
            x, y, w, h = obj.box
            assert np.array_equal(m, labels == i)
            assert np.array_equal(m, shape_mask(obj, scene.height, scene.width))  # objects never overlap
            assert not m[:y].any() and not m[y + h :].any() and not m[:, :x].any() and not m[:, x + w :].any()
            covered += m
        assert covered.max() <= 1
        assert np.array_equal(covered > 0, labels >= 0)
    scene = base_scene()
    image = render(scene)
    red, green = object_masks(scene)[0], object_masks(scene)[2]
    assert (image[red] == COLORS["red"]).all() and (image[green] == COLORS["green"]).all()
    assert (image[~(object_masks(scene)[0] | object_masks(scene)[1] | green)] == BEIGE).all()


def test_styles_are_visibly_different():
    scene = replace(base_scene(), texture="grid")
    images = {s: render(replace(scene, style=s)).astype(int) for s in STYLES}
    assert len(STYLES) == 5
    for a, b in itertools.combinations(STYLES, 2):
        assert np.abs(images[a] - images[b]).mean() > 20, (a, b)
    assert set(np.unique(images["pop art"])) == {20, 249}
    assert set(np.unique(images["sketch"])) == {30, 232, 250}
    for s in STYLES:  # a style changes the look, never the layout
        assert np.array_equal(render_layers(replace(scene, style=s))[1], render_layers(scene)[1])


def test_environments_are_global_transforms():
    scene = replace(base_scene(), texture="dotted")
    other = Scene(64, 64, "beige", "striped", objects=(Obj("diamond", "red", "dotted", (20, 20, 24, 24)),))
    day, day_other = render(scene).astype(int), render(other).astype(int)
    night = render(replace(scene, environment="night")).astype(int)
    assert np.array_equal(night, (day * 2) // 5 + np.array([10, 15, 50]))
    fog = render(replace(scene, environment="fog")).astype(int)
    assert np.array_equal(fog, (day * 45 + np.array([225, 225, 230]) * 55) // 100)
    same = (day == day_other).all(-1)
    assert same.sum() > 500  # the two scenes share background pixels of the same colour at the same place
    for env in ENVIRONMENTS[1:]:
        a = render(replace(scene, environment=env))
        b = render(replace(other, environment=env))
        assert (a != day).any(-1).all(), env  # every pixel, object and background alike, changes
        assert np.array_equal(a[same], b[same]), env  # a function of the pixel's colour and position only
        assert np.array_equal(render_layers(replace(scene, environment=env))[1], render_layers(scene)[1])


# --- edit operations: the target is the re-rendered edited scene --------------------------------------------


def test_remove_leaves_background_in_the_hole():
    scene = base_scene()
    expected = render(scene)
    expected[object_masks(scene)[0]] = BEIGE
    after = edits.remove(scene, 0)
    assert [o.shape for o in after.objects] == ["triangle", "square"]
    assert np.array_equal(render(after), expected)


def test_add_at_a_named_place():
    scene = base_scene()
    new = Obj("diamond", "yellow")
    after = edits.add(scene, new, "bottom right", "small")
    assert place_box("bottom right", "small", 64, 64) == (46, 46, 12, 12)
    assert after.objects[-1] == Obj("diamond", "yellow", "solid", (46, 46, 12, 12))
    mask = object_masks(after)[3]
    expected = render(scene)
    expected[mask] = COLORS["yellow"]
    assert np.array_equal(render(after), expected)
    assert mask.sum() > 60 and mask[52, 52]


def test_recolour_and_rematerial():
    scene = base_scene()
    mask = object_masks(scene)[0]
    expected = render(scene)
    expected[mask] = COLORS["purple"]
    assert np.array_equal(render(edits.recolor(scene, 0, "purple")), expected)

    after = edits.recolor(scene, 0, pattern="checkered")
    assert after.objects[0] == Obj("circle", "red", "checkered", (6, 6, 16, 16))
    ys, xs = np.nonzero(mask)
    half = ((xs - 6) // 3 + (ys - 6) // 3) % 2 == 1
    expected = render(scene)
    expected[ys[half], xs[half]] = np.array(COLORS["red"]) // 2
    assert np.array_equal(render(after), expected)
    assert half.sum() > 50 and (~half).sum() > 50


def test_replace_object_keeps_the_box():
    scene = base_scene()
    after = edits.replace_object(scene, 0, "square", "orange")
    assert after.objects[0] == Obj("square", "orange", "solid", (6, 6, 16, 16), "up")
    expected = render(scene)
    expected[6:22, 6:22] = COLORS["orange"]
    assert np.array_equal(render(after), expected)


def test_change_background_keeps_the_objects():
    scene = base_scene()
    after = edits.change_background(scene, "lavender", "striped")
    img, labels = render_layers(after)
    assert np.array_equal(img[labels >= 0], render(scene)[labels >= 0])
    yy, xx = np.mgrid[0:64, 0:64]
    stripe = (xx + yy) % 8 < 2
    lavender = np.array(BACKGROUNDS["lavender"])
    assert (img[(labels < 0) & stripe] == lavender - 35).all()
    assert (img[(labels < 0) & ~stripe] == lavender).all()


def test_style_and_environment_edits_set_the_global_look():
    scene = base_scene()
    styled = edits.set_style(scene, "watercolor")
    assert styled == replace(scene, style="watercolor")
    yy, xx = np.mgrid[0:64, 0:64]
    grain = ((xx * 31) ^ (yy * 17)) % 13 - 6
    expected = np.clip((render(scene).astype(int) * 6 + 255 * 4) // 10 + grain[:, :, None], 0, 255)
    assert np.array_equal(render(styled), expected)
    night = edits.set_environment(scene, "night")
    assert np.array_equal(render(night), (render(scene).astype(int) * 2) // 5 + np.array([10, 15, 50]))


def test_resize_uses_the_resize_bricks_geometry():
    scene = base_scene()
    after = edits.resize(scene, 2, 0.5)
    assert scaled_box((6, 40, 18, 18), 0.5) == (10, 49, 9, 9)  # bottom edge and horizontal centre kept
    assert after.objects[2].box == (10, 49, 9, 9)
    expected = render(scene)
    expected[40:58, 6:24] = BEIGE
    expected[49:58, 10:19] = COLORS["green"]
    assert np.array_equal(render(after), expected)
    alone = Scene(64, 64, objects=(Obj("square", "red", box=(20, 20, 16, 16)),))
    assert edits.resize(alone, 0, 1.5).objects[0].box == (16, 12, 24, 24)


def test_pose_turns_a_triangle():
    scene = base_scene()
    after = edits.set_pose(scene, 1, "left")
    assert after.objects[1] == replace(scene.objects[1], orientation="left")
    mask = object_masks(after)[1]
    assert np.array_equal(mask, shape_mask(after.objects[1], 64, 64))
    assert not np.array_equal(mask, object_masks(scene)[1])
    # The apex is on the left edge (two rows at the box's middle), the base spans the right edge.
    assert list(np.nonzero(mask[:, 40])[0]) == [14, 15]
    assert list(np.nonzero(mask[:, 57])[0]) == list(range(6, 24))


def test_extract_is_an_rgba_cutout():
    scene = base_scene()
    cut = edits.extract(scene, 0)
    assert cut.shape == (64, 64, 4) and cut.dtype == np.uint8
    assert np.array_equal(cut[:, :, :3], render(scene))
    assert np.array_equal(cut[:, :, 3], np.where(object_masks(scene)[0], 255, 0))


@pytest.mark.parametrize("side", list(OUTPAINT_SIDES))
def test_outpaint_keeps_the_old_area_unchanged(side):
    ratios = OUTPAINT_SIDES[side]
    looks = [
        ("day", "none"),
        ("sunset", "none"),
        ("snow", "watercolor"),
        ("night", "pixel art"),
        ("fog", "sketch"),
        ("day", "pop art"),
    ]
    for k, scene in enumerate(random_scenes(24, seed=7)):
        env, style = looks[k % len(looks)]
        scene = replace(scene, environment=env, style=style, texture=TEXTURES[k % len(TEXTURES)])
        le, re, te, be = side_extensions(64, 64, *ratios)
        grown = edits.outpaint(scene, *ratios)
        assert (grown.width, grown.height, grown.origin) == (64 + le + re, 64 + te + be, (le, te))
        assert [o.box[:2] for o in grown.objects] == [(o.box[0] + le, o.box[1] + te) for o in scene.objects]
        big = render(grown)
        assert np.array_equal(big[te : te + 64, le : le + 64], render(scene)), (side, env, style)
        assert big.shape[:2] != (64, 64)
    assert side_extensions(64, 64, *OUTPAINT_SIDES["all"]) == (16, 16, 16, 16)
    assert side_extensions(64, 64, *OUTPAINT_SIDES["left"]) == (32, 0, 0, 0)


def test_impossible_edits_raise():
    scene = base_scene()
    cases = [
        lambda: edits.remove(scene, 3),
        lambda: edits.add(scene, Obj("circle", "red"), "top left", "large"),  # overlaps the red circle
        lambda: edits.add(scene, Obj("circle", "red", box=(60, 60, 10, 10))),  # leaves the canvas
        lambda: edits.recolor(scene, 0, "red"),
        lambda: edits.recolor(scene, 1, "blue", "striped"),
        lambda: edits.replace_object(scene, 0, "circle"),
        lambda: edits.change_background(scene, "beige", "plain"),
        lambda: edits.set_style(scene, "none"),
        lambda: edits.set_style(replace(scene, style="sketch"), "sketch"),
        lambda: edits.set_environment(scene, "day"),
        lambda: edits.set_environment(replace(scene, environment="fog"), "fog"),
        lambda: edits.resize(scene, 2, 2.0),  # would overlap / leave the canvas
        lambda: edits.resize(replace(scene, objects=(Obj("circle", "red", box=(20, 20, 1, 1)),)), 0, 1.5),  # no change
        lambda: edits.set_pose(scene, 0, "left"),  # a circle has no pose
        lambda: edits.set_pose(scene, 1, "up"),  # already points up
        lambda: edits.outpaint(scene, 1, 1, 1, 1),
        lambda: edits.outpaint(scene, 0.5, 1, 1, 1),
        lambda: edits.extract(scene, -1),
    ]
    raised = []
    for case in cases:
        try:
            case()
        except EditImpossible:
            raised.append(True)
        else:
            raised.append(False)
    assert raised == [True] * len(cases)


def test_scene_json_round_trip():
    scenes = random_scenes(50, seed=5)
    scenes.append(edits.outpaint(replace(scenes[0], style="sketch"), 1.5, 1, 1.5, 1))
    for scene in scenes:
        text = scene.to_json()
        back = Scene.from_json(text)
        assert back == scene
        assert back.to_json() == text
        assert Scene.from_dict(scene.to_dict()) == scene
        assert np.array_equal(render(back), render(scene))
    assert scenes[-1].origin == (32, 32) and '"origin":[32,32]' in scenes[-1].to_json()
    with pytest.raises(ValueError, match="unknown object attributes"):
        Scene.from_json(scenes[0].to_json().replace('"shape":"', '"shape":"hexagon', 1))


# --- referring expressions ---------------------------------------------------------------------------------


def test_every_candidate_resolves_to_its_object():
    count = 0
    for scene in random_scenes(400, seed=21):
        for i in range(len(scene.objects)):
            for expression in candidates(scene, i):
                assert resolve(scene, expression) == i, (scene.to_json(), expression)
                assert resolve(scene, f"the {expression}") == i
                assert resolve(scene, f"The {expression}") == i
                count += 1
    assert count > 4000


def _nouns(obj):
    yield obj.shape
    yield f"{obj.color} {obj.shape}"
    yield f"{obj.size_name()} {obj.shape}"
    yield f"{obj.size_name()} {obj.color} {obj.shape}"
    if obj.pattern != "solid":
        yield f"{obj.pattern} {obj.shape}"
        yield f"{obj.color} {obj.pattern} {obj.shape}"


def test_ambiguous_and_unmatched_expressions_resolve_to_none():
    checked = 0
    for scene in random_scenes(300, seed=8):
        for obj in scene.objects:
            for noun in _nouns(obj):
                words = noun.split()
                matches = [
                    i
                    for i, o in enumerate(scene.objects)
                    if o.shape == words[-1] and all(w in (o.color, o.pattern, o.size_name()) for w in words[:-1])
                ]
                assert resolve(scene, noun) == (matches[0] if len(matches) == 1 else None), noun
                checked += len(matches) > 1
    assert checked > 50
    twins = Scene(64, 64, objects=(Obj("circle", "red", box=(6, 6, 12, 12)), Obj("circle", "red", box=(40, 6, 12, 12))))
    assert resolve(twins, "the red circle") is None
    assert resolve(twins, "the circle") is None
    assert resolve(twins, "the blue circle") is None
    assert resolve(twins, "the square") is None
    assert resolve(twins, "the thing") is None
    assert resolve(twins, "the red circle on the left") == 0
    assert resolve(twins, "the second circle from the left") == 1
    assert resolve(twins, "the circle at the top") is None  # level with each other


def test_ordinals_and_sides_need_clear_separation():
    # Circles 0 and 1 share a column; circle 2 is clearly right of both.
    scene = Scene(
        64,
        64,
        objects=(
            Obj("circle", "red", box=(6, 6, 12, 12)),
            Obj("circle", "blue", box=(6, 40, 12, 12)),
            Obj("circle", "green", box=(40, 20, 12, 12)),
        ),
    )
    assert resolve(scene, "the circle on the left") is None
    assert resolve(scene, "the first circle from the left") is None
    assert resolve(scene, "the second circle from the left") is None
    assert resolve(scene, "the third circle from the left") == 2
    assert resolve(scene, "the fourth circle from the left") is None
    assert resolve(scene, "the circle on the right") == 2
    assert resolve(scene, "the first circle from the top") == 0
    assert sorted(candidates(scene, 2)) == [
        "circle on the right",
        "green circle",
        "second circle from the top",
        "small green circle",
    ]
    assert MIN_SEPARATION == 4
    # Centres 3 pixels apart are level, 4 apart are not.
    near = Scene(64, 64, objects=(Obj("square", "red", box=(6, 6, 10, 10)), Obj("square", "red", box=(9, 30, 10, 10))))
    assert resolve(near, "the square on the left") is None
    far = Scene(64, 64, objects=(Obj("square", "red", box=(6, 6, 10, 10)), Obj("square", "red", box=(10, 30, 10, 10))))
    assert resolve(far, "the square on the left") == 0
    assert resolve(far, "the second square from the left") == 1
