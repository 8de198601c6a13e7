"""Reading user images and masks (every odd format to RGB uint8 or 0/255, or a clear error) and atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lego_edit.imageio import (
    ImageReadError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    encode_png,
    load_image,
    load_mask,
    save_image,
)
from lego_edit.workflow import Limits


def rgb_blocks(h=8, w=16):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = [255, 0, 0]
    img[:, w // 2 :] = [0, 0, 255]
    return img


def read_error(path, **kw) -> str:
    with pytest.raises(ImageReadError) as info:
        load_image(path, **kw)
    return str(info.value)


# ---------------------------------------------------------------------------------------------- formats


def test_png_rgb_round_trip(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    save_image(tmp_path / "a.png", img)
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (9, 11, 3)
    np.testing.assert_array_equal(out, img)
    assert Image.open(tmp_path / "a.png").format == "PNG"


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(rgb_blocks()).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    stored = np.asarray(Image.open(tmp_path / "rot.jpg").convert("RGB"))  # as stored: 16 wide, 8 high
    out = load_image(tmp_path / "rot.jpg")
    assert stored.shape == (8, 16, 3) and out.shape == (16, 8, 3)
    np.testing.assert_array_equal(out, np.rot90(stored, k=-1))  # exactly the stored pixels, turned clockwise
    assert out[0, 0].tolist() == stored[0, 0].tolist() and out[0, 0, 0] > 200  # red (left) is now on top
    assert out[-1, 0, 2] > 200  # blue (right) is now at the bottom


def test_16_bit_grayscale_png(tmp_path):
    values = (np.arange(12 * 16, dtype=np.uint32).reshape(12, 16) * 300).astype(np.uint16)  # 0 .. 57300
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    out = load_image(tmp_path / "g16.png")
    assert out.shape == (12, 16, 3) and out.dtype == np.uint8
    expected = (values >> 8).astype(np.uint8)  # the high byte
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], expected)
    assert out[11, 15].tolist() == [223, 223, 223]  # 191 * 300 = 57300 -> 57300 >> 8 = 223


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = [200, 100, 0]
    rgba[:, :4, 3] = 255
    rgba[:, 4:6, 3] = 128
    rgba[:, 6:, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.shape == (8, 8, 3)
    assert out[0, 0].tolist() == [200, 100, 0]
    # (c * a + 255 * (255 - a) + 127) // 255 with a = 128: (25600 + 32385 + 127) // 255 = 227, ...
    assert out[0, 4].tolist() == [227, 177, 127]
    assert out[0, 7].tolist() == [255, 255, 255]


def test_palette_images(tmp_path):
    index = np.array([[0, 1, 2, 1]] * 8, np.uint8).repeat(2, axis=1)  # 8x8
    pal = Image.fromarray(index, "P")
    pal.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90] + [0] * 759)
    pal.save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    assert out[0, :, :].tolist() == [[10, 20, 30]] * 2 + [[40, 50, 60]] * 2 + [[70, 80, 90]] * 2 + [[40, 50, 60]] * 2
    pal.save(tmp_path / "pt.png", transparency=2)  # colour 2 transparent: white after compositing
    out = load_image(tmp_path / "pt.png")
    assert out[0, 4].tolist() == [255, 255, 255] and out[0, 0].tolist() == [10, 20, 30]


def test_grayscale_and_float_images(tmp_path):
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    out = load_image(tmp_path / "l.png")
    assert out.shape == (8, 8, 3)
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))
    la = np.dstack([gray, np.full((8, 8), 255, np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_image(tmp_path / "la.png"), out)
    floats = np.linspace(-50, 300, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(floats, "F").save(tmp_path / "f.tiff")
    out = load_image(tmp_path / "f.tiff")
    np.testing.assert_array_equal(out[:, :, 0], np.clip(floats, 0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------------------------- failures


def test_unusable_files_raise_image_read_error_naming_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    assert read_error(tmp_path / "empty.png") == f"{tmp_path / 'empty.png'}: empty file (0 bytes)"
    (tmp_path / "corrupt.png").write_bytes(b"this is not an image at all")
    message = read_error(tmp_path / "corrupt.png")
    assert message.startswith(f"{tmp_path / 'corrupt.png'}: not a readable image (UnidentifiedImageError: ")
    good = encode_png(rgb_blocks())
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    assert read_error(tmp_path / "truncated.png").startswith(f"{tmp_path / 'truncated.png'}: not a readable image (")
    assert read_error(tmp_path / "missing.png") == f"{tmp_path / 'missing.png'}: no such file"
    assert read_error(tmp_path) == f"{tmp_path}: no such file"  # a folder is not an image file


def test_too_small_and_too_large(tmp_path):
    Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(tmp_path / "dot.png")
    assert read_error(tmp_path / "dot.png") == (
        f"{tmp_path / 'dot.png'}: image is 1x1, smaller than the 8-pixel minimum side"
    )
    assert load_image(tmp_path / "dot.png", min_side=1).shape == (1, 1, 3)
    Image.fromarray(np.zeros((7, 30, 3), np.uint8)).save(tmp_path / "thin.png")
    assert "image is 30x7, smaller than the 8-pixel minimum side" in read_error(tmp_path / "thin.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "big.png")
    assert read_error(tmp_path / "big.png", limits=Limits(max_pixels=100)) == (
        f"{tmp_path / 'big.png'}: big.png would be 16x16 pixels, above the bound (100 pixels, 8192 per side)"
    )


# -------------------------------------------------------------------------------------------------- masks


def test_mask_from_alpha(tmp_path):
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere: luminance alone would select everything
    rgba[2:5, 3:7, 3] = 200
    rgba[0, 0, 3] = 100  # below half: not selected
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    expected = np.zeros((8, 8), np.uint8)
    expected[2:5, 3:7] = 255
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png"), expected)


def test_mask_from_luminance(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[1:4, 1:4] = 255
    rgb[6, 6] = [200, 200, 0]  # mean 133: selected
    rgb[7, 7] = [255, 0, 0]  # mean 85: not selected
    expected = np.zeros((8, 8), np.uint8)
    expected[1:4, 1:4] = 255
    expected[6, 6] = 255
    Image.fromarray(rgb).save(tmp_path / "m.png")
    out = load_mask(tmp_path / "m.png")
    assert out.dtype == np.uint8 and out.shape == (8, 8)
    np.testing.assert_array_equal(out, expected)
    opaque = np.dstack([rgb, np.full((8, 8), 255, np.uint8)])  # an opaque alpha carries no mask: luminance is used
    Image.fromarray(opaque, "RGBA").save(tmp_path / "o.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "o.png"), expected)
    Image.fromarray(expected, "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "l.png"), expected)


def test_mask_is_resized_to_the_image_with_nearest_sampling(tmp_path):
    small = np.zeros((4, 4), np.uint8)
    small[0:2, 2:4] = 255
    Image.fromarray(small, "L").save(tmp_path / "m.png")
    out = load_mask(tmp_path / "m.png", size=(8, 12))  # (width, height)
    expected = np.zeros((12, 8), np.uint8)
    expected[0:6, 4:8] = 255
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(load_mask(tmp_path / "m.png", size=(4, 4)), small)
    (tmp_path / "bad.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty file"):
        load_mask(tmp_path / "bad.png")


# ------------------------------------------------------------------------------------------ atomic writes


def test_atomic_writes_leave_only_the_target(tmp_path):
    out = tmp_path / "deep" / "er"
    save_image(out / "img.png", rgb_blocks())
    atomic_write_json(out / "run.json", {"a": [1, 2], "b": "é"})
    atomic_write_text(out / "note.txt", "hello\n")
    atomic_write_bytes(out / "note.txt", b"replaced")
    assert sorted(p.name for p in out.iterdir()) == ["img.png", "note.txt", "run.json"]
    assert (out / "run.json").read_text(encoding="utf-8") == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": "é"\n}\n'
    assert json.loads((out / "run.json").read_text(encoding="utf-8")) == {"a": [1, 2], "b": "é"}
    assert (out / "note.txt").read_bytes() == b"replaced"
    np.testing.assert_array_equal(load_image(out / "img.png"), rgb_blocks())


def test_a_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "run.json"
    target.write_text("old", encoding="utf-8")
    with pytest.raises(TypeError):
        atomic_write_bytes(target, "not bytes")  # fails while writing the temp file
    assert target.read_text(encoding="utf-8") == "old"
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(OSError):
        atomic_write_bytes(tmp_path / "a_folder", b"x")  # fails at the final rename
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_folder", "run.json"]
    assert list((tmp_path / "a_folder").iterdir()) == []
