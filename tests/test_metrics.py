"""Image and caption metrics (lego_edit.evaluation.metrics), with values worked out by hand."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from lego_edit.evaluation.metrics import MAX_PSNR, box_iou, mask_iou, psnr, token_f1


def gradient(h=10, w=10):
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 20, y * 20, (x + y) * 10]).astype(np.uint8)


def one_pixel_off(image, y=3, x=4):
    """``image`` with pixel (y, x) set to black where it was white, so all three channels differ by 255."""
    a, b = image.copy(), image.copy()
    a[y, x] = 255
    b[y, x] = 0
    return a, b


# ---------------------------------------------------------------------------------------------------- psnr


def test_psnr_identical_is_max():
    img = gradient()
    assert psnr(img, img) == MAX_PSNR == 60.0


def test_psnr_known_mse():
    # 3 of the 300 channel values differ by 255: MSE = 3 * 255^2 / 300 = 255^2 / 100 -> exactly 20 dB.
    a, b = one_pixel_off(gradient())
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-12)
    # every value differs by 255: MSE = 255^2 -> 0 dB
    black, white = np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 255, np.uint8)
    assert psnr(black, white) == 0.0
    # every value differs by 10: 10 log10(255^2 / 100)
    assert psnr(black, np.full((4, 4, 3), 10, np.uint8)) == pytest.approx(10 * math.log10(650.25), abs=1e-12)


def test_psnr_is_capped():
    # one value differs by 1 in 300: 10 log10(255^2 * 300) = 72.9 dB, above the cap
    a = gradient()
    b = a.copy()
    b[0, 0, 0] += 1
    assert psnr(a, b) == MAX_PSNR


def test_psnr_masked():
    a, b = one_pixel_off(gradient(), y=3, x=4)
    only_that_pixel = np.zeros((10, 10), np.uint8)
    only_that_pixel[3, 4] = 255
    assert psnr(a, b, only_that_pixel) == 0.0  # MSE 255^2 over that pixel
    row = np.zeros((10, 10), bool)
    row[3] = True  # 10 pixels, one of them differing: MSE = 255^2 / 10 -> 10 dB
    assert psnr(a, b, row) == pytest.approx(10.0, abs=1e-12)
    elsewhere = ~row
    assert psnr(a, b, elsewhere) == MAX_PSNR


def test_psnr_empty_mask_and_size_mismatch_give_none():
    img = gradient()
    assert psnr(img, img, np.zeros((10, 10), np.uint8)) is None
    assert psnr(img, gradient(10, 11)) is None
    assert psnr(img, gradient(11, 10)) is None


def test_psnr_composites_rgba_on_white():
    transparent = np.zeros((6, 6, 4), np.uint8)  # black, fully transparent -> white
    white = np.full((6, 6, 3), 255, np.uint8)
    assert psnr(transparent, white) == MAX_PSNR
    opaque = np.zeros((6, 6, 4), np.uint8)
    opaque[..., 3] = 255
    assert psnr(opaque, np.zeros((6, 6, 3), np.uint8)) == MAX_PSNR
    half = np.zeros((6, 6, 4), np.uint8)
    half[..., 3] = 128  # (0 * 128 + 255 * 127 + 127) // 255 = 127
    assert psnr(half, np.full((6, 6, 3), 127, np.uint8)) == MAX_PSNR
    assert psnr(half, np.full((6, 6, 3), 137, np.uint8)) == pytest.approx(10 * math.log10(650.25), abs=1e-12)


# ------------------------------------------------------------------------------------------------- mask_iou


def test_mask_iou():
    a = np.zeros((8, 8), np.uint8)
    b = np.zeros((8, 8), bool)
    a[0:2, 0:2] = 255  # 4 pixels
    b[1:3, 0:3] = True  # 6 pixels, 2 shared -> 2 / 8
    assert mask_iou(a, b) == 0.25
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, np.zeros((8, 8), np.uint8)) == 0.0
    assert mask_iou(np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint8)) == 1.0  # both empty
    assert mask_iou(a // 255, a) == 1.0  # 0/1 and 0/255 masks


# -------------------------------------------------------------------------------------------------- box_iou


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0, 0, 9, 9], [0, 0, 9, 9], Fraction(1)),
        ([0, 0, 9, 9], [5, 5, 14, 14], Fraction(25, 175)),  # inclusive: 5x5 shared, 10x10 each
        ([0, 0, 4, 4], [4, 4, 8, 8], Fraction(1, 49)),  # touching corners share one pixel
        ([0, 0, 4, 4], [5, 0, 9, 4], Fraction(0)),  # adjacent, no shared pixel
        ([3, 3, 3, 3], [3, 3, 3, 3], Fraction(1)),  # a one-pixel box
        ([0, 0, 3, 1], [2, 0, 5, 1], Fraction(4, 12)),  # 2x2 shared of 4x2 each
        ([0, 0, 9, 9], [2, 2, 3, 3], Fraction(4, 100)),  # contained
        ([5, 5, 4, 4], [5, 5, 4, 4], Fraction(0)),  # inverted boxes have no area
    ],
)
def test_box_iou_inclusive(a, b, expected):
    assert box_iou(a, b) == pytest.approx(float(expected), abs=1e-15)
    assert box_iou(b, a) == pytest.approx(float(expected), abs=1e-15)


# ------------------------------------------------------------------------------------------------- token_f1


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        ("a red square", "a red square", Fraction(1)),
        ("A Red, square!", "a red square", Fraction(1)),  # case and punctuation ignored
        ("a red square", "a blue square", Fraction(2, 3)),  # 2 of 3 both ways
        ("red square on the left", "red square", Fraction(4, 7)),  # P = 2/5, R = 1 -> 4/7
        ("red red", "red", Fraction(2, 3)),  # repeated tokens count once each: P=1/2, R=1
        ("3 circles", "three circles", Fraction(1, 2)),  # numbers are tokens
        ("green", "a red square", Fraction(0)),
        ("", "", Fraction(1)),  # both empty
        ("!!", "...", Fraction(1)),  # no tokens on either side
        ("", "a red square", Fraction(0)),
        ("a red square", "", Fraction(0)),
    ],
)
def test_token_f1(prediction, reference, expected):
    assert token_f1(prediction, reference) == pytest.approx(float(expected), abs=1e-15)


def test_token_f1_keeps_articles():
    """Unlike SQuAD's normalisation, articles are tokens here: 'the' vs 'a' costs one token each way."""
    assert token_f1("the red square", "a red square") == pytest.approx(2 / 3, abs=1e-15)
