"""The function bricks on small synthetic arrays, with expected outputs computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lego_edit.bricks import functions as F
from lego_edit.bricks.catalog import FUNCTION_IMPLEMENTATIONS, MODEL_BRICKS
from lego_edit.workflow import BrickContext, ExecutionError, LimitExceededError, Limits

CTX = BrickContext()


def mask(h, w, *rects):
    """An HxW uint8 0/255 mask with the given (x, y, w, h) rectangles set."""
    m = np.zeros((h, w), np.uint8)
    for x, y, rw, rh in rects:
        m[y : y + rh, x : x + rw] = 255
    return m


def px(*rows):
    """An image from nested lists of pixels."""
    return np.array(rows, dtype=np.uint8)


# ------------------------------------------------------------------------------------------------- INVERSE


def test_inverse_of_one_mask():
    m2 = np.array([[0, 255, 0], [255, 255, 0]], np.uint8)
    out = F.inverse(CTX, mask1=None, mask2=m2)
    assert list(out) == ["mask"]
    np.testing.assert_array_equal(out["mask"], [[255, 0, 255], [0, 0, 255]])
    assert out["mask"].dtype == np.uint8


def test_inverse_subtracts_masks_and_saturates():
    m1 = np.array([[255, 255, 0, 0]], np.uint8)
    m2 = np.array([[0, 255, 255, 0]], np.uint8)
    # the published brick computed m1 - m2 in uint8: 0 - 255 wraps around to 1
    np.testing.assert_array_equal(F.inverse(CTX, mask1=m1, mask2=m2)["mask"], [[255, 0, 0, 0]])


def test_inverse_accepts_bool_and_01_masks():
    m1 = np.array([[True, True], [False, True]])
    m2 = np.array([[0, 1], [1, 0]], np.uint8)
    np.testing.assert_array_equal(F.inverse(CTX, mask1=m1, mask2=m2)["mask"], [[255, 0], [0, 255]])


def test_inverse_images_saturates_and_keeps_alpha():
    a = px([[10, 200, 255], [0, 0, 0]])
    b = px([[20, 100, 0], [1, 2, 3]])
    out = F.inverse(CTX, image1=a, image2=b)
    assert list(out) == ["image"]
    np.testing.assert_array_equal(out["image"], [[[0, 100, 255], [0, 0, 0]]])  # not [246, 100, 255] (uint8 wrap)
    rgba = px([[10, 200, 255, 77]])
    np.testing.assert_array_equal(F.inverse(CTX, image1=rgba, image2=px([[5, 5, 5]]))["image"], [[[5, 195, 250, 77]]])


def test_inverse_size_mismatch_is_an_execution_error():
    with pytest.raises(ExecutionError, match=r"mask1 and mask2 differ in size: 3x2 vs 2x2"):
        F.inverse(CTX, mask1=np.zeros((2, 3), np.uint8), mask2=np.zeros((2, 2), np.uint8))
    with pytest.raises(ExecutionError, match=r"image1 and image2 differ in size: 1x1 vs 2x1"):
        F.inverse(CTX, image1=np.zeros((1, 1, 3), np.uint8), image2=np.zeros((1, 2, 3), np.uint8))


# ------------------------------------------------------------------------------------------------- COMPOSE


def test_compose_masks_is_a_saturating_union():
    m1 = np.array([[255, 255, 0, 0]], np.uint8)
    m2 = np.array([[0, 255, 255, 0]], np.uint8)
    out = F.compose(CTX, mask1=m1, mask2=m2)
    assert list(out) == ["mask"]
    np.testing.assert_array_equal(out["mask"], [[255, 255, 255, 0]])  # the published uint8 sum gave 254 in the overlap


def test_compose_opaque_image_covers_the_first():
    a = px([[1, 2, 3], [4, 5, 6]])
    b = px([[7, 8, 9], [10, 11, 12]])
    out = F.compose(CTX, image1=a, image2=b)["image"]
    np.testing.assert_array_equal(out, b)
    assert out is not b
    rgba_base = px([[1, 2, 3, 0], [4, 5, 6, 9]])
    np.testing.assert_array_equal(
        F.compose(CTX, image1=rgba_base, image2=b)["image"], [[[7, 8, 9, 255], [10, 11, 12, 255]]]
    )


def test_compose_cut_out_is_alpha_blended():
    base = px([[0, 0, 0], [200, 100, 50], [10, 10, 10]])
    top = px([[255, 100, 0, 128], [0, 0, 0, 0], [90, 90, 90, 255]])
    # (base * (255 - a) + top * a + 127) // 255 per channel
    np.testing.assert_array_equal(
        F.compose(CTX, image1=base, image2=top)["image"], [[[128, 50, 0], [200, 100, 50], [90, 90, 90]]]
    )
    base_rgba = px([[0, 0, 0, 10], [200, 100, 50, 255], [10, 10, 10, 0]])
    np.testing.assert_array_equal(
        F.compose(CTX, image1=base_rgba, image2=top)["image"],
        [[[128, 50, 0, 128], [200, 100, 50, 255], [90, 90, 90, 255]]],
    )


# ------------------------------------------------------------------------------------------------- RESIZE


@pytest.mark.parametrize(
    "box, ratio, expected",
    [
        # x, y, w, h; new_w = int(w * ratio), new_x = x + (w - new_w) // 2, new_y = y + h - new_h
        ((4, 6, 8, 8), 0.5, (6, 10, 4, 4)),
        ((4, 6, 8, 8), 1.5, (2, 2, 12, 12)),
        ((3, 5, 5, 7), 1.5, (2, 2, 7, 10)),  # (5 - 7) // 2 = -1: floor division, as published
        ((3, 5, 5, 7), 0.5, (4, 9, 2, 3)),  # int(2.5) = 2, int(3.5) = 3
        ((4, 6, 8, 8), 1.0, (4, 6, 8, 8)),
    ],
)
def test_scaled_box_geometry(box, ratio, expected):
    assert F.scaled_box(box, ratio) == expected


def test_resize_mask_bottom_aligned_and_centred():
    m = mask(16, 16, (4, 6, 8, 8))
    out = F.resize(CTX, mask=m, ratio=0.5)
    assert list(out) == ["mask"]
    np.testing.assert_array_equal(out["mask"], mask(16, 16, (6, 10, 4, 4)))
    np.testing.assert_array_equal(F.resize(CTX, mask=m, ratio=1.5)["mask"], mask(16, 16, (2, 2, 12, 12)))
    np.testing.assert_array_equal(F.resize(CTX, mask=m, ratio=1.0)["mask"], m)
    odd = mask(16, 16, (3, 5, 5, 7))
    np.testing.assert_array_equal(F.resize(CTX, mask=odd, ratio=1.5)["mask"], mask(16, 16, (2, 2, 7, 10)))


def test_resize_mask_clipped_at_the_canvas_edge():
    m = mask(16, 16, (6, 8, 4, 4))
    # 16x16 at x = 6 + (4 - 16) // 2 = 0, y = 8 + 4 - 16 = -4: rows -4..11, only 0..11 visible
    np.testing.assert_array_equal(F.resize(CTX, mask=m, ratio=4)["mask"], mask(16, 16, (0, 0, 16, 12)))


def test_resize_mask_scales_the_largest_object_only():
    m = mask(16, 16, (1, 1, 2, 2), (8, 8, 6, 6))
    # the 6x6 object becomes 3x3 at x = 8 + 1 = 9, y = 8 + 6 - 3 = 11; the small one is not part of it
    np.testing.assert_array_equal(F.resize(CTX, mask=m, ratio=0.5)["mask"], mask(16, 16, (9, 11, 3, 3)))


def test_resize_empty_mask_is_empty():
    out = F.resize(CTX, mask=np.zeros((8, 8), np.uint8), ratio=2)["mask"]
    np.testing.assert_array_equal(out, np.zeros((8, 8), np.uint8))


def test_resize_cut_out_image_scales_its_object():
    img = np.zeros((16, 16, 4), np.uint8)
    img[8:14, 4:8] = [10, 20, 30, 255]  # x=4, y=8, w=4, h=6
    expected = np.zeros_like(img)
    expected[11:14, 5:7] = [10, 20, 30, 255]  # 2x3 at x = 4 + 1, y = 8 + 6 - 3
    np.testing.assert_array_equal(F.resize(CTX, image=img, ratio=0.5)["image"], expected)
    expected = np.zeros_like(img)
    expected[2:14, 2:10] = [10, 20, 30, 255]  # 8x12 at x = 4 - 2, y = 8 + 6 - 12
    np.testing.assert_array_equal(F.resize(CTX, image=img, ratio=2)["image"], expected)


def test_resize_plain_image_zooms_about_the_centre():
    y, x = np.mgrid[0:16, 0:16]
    img = np.dstack([30 * (x // 2), 30 * (y // 2), np.full_like(x, 200)]).astype(np.uint8)  # constant 2x2 blocks
    expected = np.zeros_like(img)
    expected[4:12, 4:12] = img[::2, ::2]  # 8x8, one pixel per block, centred
    out = F.resize(CTX, image=img, ratio=0.5)
    assert list(out) == ["image"]
    np.testing.assert_array_equal(out["image"], expected)
    flat = np.full((16, 16, 3), 77, np.uint8)
    np.testing.assert_array_equal(F.resize(CTX, image=flat, ratio=2)["image"], flat)  # zoomed in: still all 77


def test_resize_checks_the_size_bound_before_allocating():
    ctx = BrickContext(limits=Limits(max_pixels=100))
    with pytest.raises(
        LimitExceededError,
        match=r"the resized object would be 32x32 pixels, above the bound "
        r"\(100 pixels, 8192 per side\)",
    ):
        F.resize(ctx, mask=mask(16, 16, (4, 4, 8, 8)), ratio=4)
    with pytest.raises(LimitExceededError, match=r"the zoomed image would be 64x64 pixels"):
        F.resize(ctx, image=np.zeros((16, 16, 3), np.uint8), ratio=4)
    ctx = BrickContext(limits=Limits(max_side=20))
    with pytest.raises(LimitExceededError, match=r"the zoomed image would be 32x32"):
        F.resize(ctx, image=np.zeros((16, 16, 3), np.uint8), ratio=2)


# --------------------------------------------------------------------------------------------------- BBOX


def test_bbox_of_an_l_shape():
    m = mask(8, 8, (1, 2, 2, 5), (1, 5, 5, 2))  # an L: x 1..5, y 2..6
    out = F.bbox(CTX, mask=m)
    assert list(out) == ["mask"]
    np.testing.assert_array_equal(out["mask"], mask(8, 8, (1, 2, 5, 5)))
    assert F.mask_bbox(m > 0) == (1, 2, 5, 5)


def test_bbox_spans_all_set_pixels():
    m = np.zeros((6, 6), np.uint8)
    m[1, 4] = m[4, 1] = 255
    np.testing.assert_array_equal(F.bbox(CTX, mask=m)["mask"], mask(6, 6, (1, 1, 4, 4)))
    single = np.zeros((5, 5), np.uint8)
    single[2, 3] = 255
    np.testing.assert_array_equal(F.bbox(CTX, mask=single)["mask"], single)


def test_bbox_of_an_empty_mask_is_empty():
    # the published BBOX raised IndexError here
    out = F.bbox(CTX, mask=np.zeros((4, 5), np.uint8))["mask"]
    np.testing.assert_array_equal(out, np.zeros((4, 5), np.uint8))
    assert F.mask_bbox(np.zeros((4, 5), bool)) is None


# ---------------------------------------------------------------------------------------------- FASTINPAINT


def two_tone(h=16, w=16):
    img = np.full((h, w, 3), 100, np.uint8)
    img[:, w // 2 :] = 200
    return img


def test_fastinpaint_changes_only_the_dilated_hole():
    img = two_tone()
    hole = mask(16, 16, (6, 6, 4, 4))
    out = F.fastinpaint(CTX, image=img, mask=hole)
    assert sorted(out) == ["image", "score"]
    filled = out["image"]
    assert filled.shape == (16, 16, 3) and filled.dtype == np.uint8
    dilated = mask(16, 16, (5, 5, 6, 6))  # a 3x3 dilation, once (16 px / 100, rounded, at least 1)
    np.testing.assert_array_equal(filled[dilated == 0], img[dilated == 0])
    assert (filled != img).any(axis=2)[dilated > 0].sum() > 0  # the hole was filled with something else
    assert not (filled != img).any(axis=2)[dilated == 0].any()


def test_fastinpaint_score():
    flat = np.full((16, 16, 3), 100, np.uint8)
    small = F.fastinpaint(CTX, image=flat, mask=mask(16, 16, (6, 6, 4, 4)))["score"]
    larger = F.fastinpaint(CTX, image=flat, mask=mask(16, 16, (4, 4, 8, 8)))["score"]
    assert small == pytest.approx(16 / 256 / 0.4)  # area / 40% of the image; no texture around the hole
    assert larger == pytest.approx(64 / 256 / 0.4)
    assert 0 <= small < larger <= 1
    assert F.fastinpaint(CTX, image=flat, mask=mask(16, 16, (2, 2, 12, 12)))["score"] == 1.0  # clipped
    empty = F.fastinpaint(CTX, image=flat, mask=np.zeros((16, 16), np.uint8))
    assert empty["score"] == 0.0
    np.testing.assert_array_equal(empty["image"], flat)
    # a busy ring: half 100, half 200 around the hole -> std 50 per channel -> 50 / 64
    assert F.fastinpaint(CTX, image=two_tone(), mask=mask(16, 16, (6, 6, 4, 4)))["score"] == pytest.approx(50 / 64)
    assert isinstance(small, float)


def test_fastinpaint_on_a_cut_out_returns_rgb_and_checks_sizes():
    rgba = np.dstack([two_tone(), np.full((16, 16), 255, np.uint8)])
    out = F.fastinpaint(CTX, image=rgba, mask=mask(16, 16, (6, 6, 4, 4)))
    assert out["image"].shape == (16, 16, 3)
    with pytest.raises(ExecutionError, match="image and mask differ in size: 16x16 vs 8x8"):
        F.fastinpaint(CTX, image=two_tone(), mask=np.zeros((8, 8), np.uint8))


# ----------------------------------------------------------------------------------------------- BRIGHTNESS


@pytest.mark.parametrize(
    "ratio, expected",
    [
        (0.5, [100, 200, 3]),
        (0.0, [0, 0, 0]),
        (0.75, [150, 255, 4]),
        (1.0, [200, 255, 6]),
        (7.0, [200, 255, 6]),
    ],
)
def test_brightness(ratio, expected):
    out = F.brightness(CTX, image=px([[100, 200, 3]]), ratio=ratio)["image"]
    np.testing.assert_array_equal(out, [[expected]])
    rgba = F.brightness(CTX, image=px([[100, 200, 3, 42]]), ratio=ratio)["image"]
    np.testing.assert_array_equal(rgba, [[expected + [42]]])


# ------------------------------------------------------------------------------------------ against the specs


def test_function_bricks_return_exactly_what_their_modes_declare(registry):
    m = mask(8, 8, (2, 2, 3, 3))
    img = np.full((8, 8, 3), 50, np.uint8)
    values = {"mask": m, "mask1": m, "mask2": m, "image": img, "image1": img, "image2": img, "ratio": 0.5}
    assert set(FUNCTION_IMPLEMENTATIONS) == {"INVERSE", "COMPOSE", "RESIZE", "BBOX", "FASTINPAINT", "BRIGHTNESS"}
    for name, fn in FUNCTION_IMPLEMENTATIONS.items():
        spec = registry.resolve(name)
        assert spec.backend == "function" and registry.implementation(name) is fn
        for mode in spec.all_modes:
            out = fn(CTX, **{k: values[k] for k in mode.requires})
            assert sorted(out) == sorted(mode.produces), (name, mode)
            for key, value in out.items():
                kind = spec.output(key).kind
                if kind == "Float":
                    assert spec.output(key).range[0] <= value <= spec.output(key).range[1]
                else:
                    assert value.dtype == np.uint8 and value.shape[:2] == (8, 8)
    for name in MODEL_BRICKS:
        assert registry.implementation(name) is None and registry.resolve(name).backend == "model"


def test_object_region_is_the_grown_box_clipped_to_the_image():
    m = np.zeros((40, 50), np.uint8)
    m[10:18, 45:49] = 255  # an 4x8 object near the right edge
    region = F.object_region(m, margin=0.25)
    assert F.mask_bbox(region > 0) == (43, 8, 7, 12)  # grown by 2 px (0.25 x 8), clipped at x = 49
    assert F.object_region(np.zeros((4, 4), np.uint8)) is None


@pytest.mark.parametrize(
    "prompt, subject",
    [
        ("make the red triangle point left", "red triangle"),
        ("rotate the big striped triangle to point up", "big striped triangle"),
        ("turn the leftmost triangle so it points down", "leftmost triangle"),
        ("The green triangle should face right.", "green triangle"),
        ("have the triangle pointing up", "triangle"),
        ("make it point left", None),
    ],
)
def test_pose_subject_is_the_expression_res_is_trained_on(prompt, subject):
    from lego_edit.bricks.models import pose_subject

    assert pose_subject(prompt) == subject


@pytest.mark.parametrize("start, goal", [("up", "left"), ("up", "down"), ("left", "right"), ("down", "right")])
def test_turn_object_draws_the_triangle_pointing_the_new_way(start, goal):
    from lego_edit.data import edits
    from lego_edit.data.shapes import Obj, Scene, render_layers

    scene = Scene(
        64,
        64,
        "beige",
        "grid",
        objects=(Obj("triangle", "blue", "solid", (20, 16, 18, 22), start), Obj("circle", "red", box=(44, 40, 12, 12))),
    )
    image, labels = render_layers(scene)
    obj = np.where(labels == 0, 255, 0).astype(np.uint8)
    assert F.pointing(obj) == start
    turned = F.turn_object(image, obj, goal)
    target, target_labels = render_layers(edits.set_pose(scene, 0, goal))
    box = F.object_region(obj) > 0
    same = np.abs(turned.astype(int) - target.astype(int)).max(axis=2) <= 8
    # The apex and the base land where the renderer draws them; stretching a quarter-turned raster back to a
    # non-square box steps its edges by a pixel here and there (the model refines those).
    assert same[target_labels == 0].mean() > 0.9
    assert same[box].mean() > 0.8  # what the object uncovers is FASTINPAINT's blur of the grid: roughly right
    assert (turned[~box] == image[~box]).all()  # nothing outside the object's box moves


def test_turn_object_needs_an_object_that_points_somewhere():
    square = np.zeros((32, 32), np.uint8)
    square[8:20, 8:20] = 255
    image = np.zeros((32, 32, 3), np.uint8)
    assert F.pointing(square) is None and F.turn_object(image, square, "left") is None
    triangle = np.tril(np.full((12, 12), 255, np.uint8))
    canvas = np.zeros((32, 32), np.uint8)
    canvas[4:16, 4:16] = triangle
    assert F.turn_object(image, canvas, "sideways") is None
