"""Random access to shards (ShardSamples): the same samples as the streaming reader, fields and image shapes without
decoding, and brick training that reads its batches from the shards learns exactly what it learns in memory."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from lego_edit.data.shard_index import ShardSamples, first_of_each, png_shape, sample_meta
from lego_edit.data.shards import load_samples, write_shard_set
from lego_edit.models.segmentation import SegmentationModel
from lego_edit.pipeline import config_from
from lego_edit.training import segmentation


def _samples(n: int, offset: int = 0):
    rng = np.random.default_rng(offset)
    for i in range(offset, offset + n):
        images = {
            "source": rng.integers(0, 256, (12, 10, 3), dtype=np.uint8),
            "mask": np.where(rng.random((12, 10)) < 0.5, 255, 0).astype(np.uint8),
        }
        if i % 3 == 0:  # an RGBA cut-out on some samples only
            images["preimage"] = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
        yield f"s_{i:03d}", images, {"brick": "FILL" if i % 2 else "RCM", "prompt": f"prompt {i}"}


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    write_shard_set({"train": _samples(7), "val": _samples(3, 100)}, "edit", out, samples_per_shard=3)
    return out


def _same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(
        np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a
    )


@pytest.mark.parametrize("split, kinds", [("train", None), ("val", None), ("train", ["FILL"]), (None, None)])
def test_random_access_gives_the_streamed_samples_in_their_order(shard_dir, split, kinds):
    streamed = load_samples(shard_dir, split, kinds)
    indexed = ShardSamples(shard_dir, split, kinds)
    assert len(indexed) == len(streamed) > 0
    assert all(_same(indexed[i], s) for i, s in enumerate(streamed))
    assert all(_same(a, b) for a, b in zip(reversed(indexed), reversed(streamed)))  # any order, across shards
    assert _same(indexed[-1], streamed[-1]) and len(indexed[1:3]) == 2
    with pytest.raises(IndexError):
        indexed[len(streamed)]


def test_fields_and_image_shapes_are_read_without_decoding_an_image(shard_dir, monkeypatch):
    streamed = load_samples(shard_dir, "train")
    indexed = ShardSamples(shard_dir, "train")

    def no_decoding(*args, **kwargs):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(Image, "open", no_decoding)
    metas = [sample_meta(indexed, i) for i in range(len(indexed))]
    monkeypatch.undo()
    assert metas == [sample_meta(streamed, i) for i in range(len(streamed))]
    assert metas[0]["__shapes__"] == {"source": (12, 10, 3), "mask": (12, 10), "preimage": (6, 5, 4)}
    assert metas[1]["brick"] == "FILL" and "preimage" not in metas[1]["__shapes__"]


def test_an_evaluation_decodes_only_the_samples_it_scores(shard_dir, monkeypatch):
    """first_of_each picks, from the index, what the in-memory filter picks from the decoded split, and decodes
    nothing else."""
    streamed = load_samples(shard_dir, "train")
    for images in ((), ("preimage",)):
        expected = []
        for brick in ("RCM", "FILL"):
            expected += [s for s in streamed if s["brick"] == brick and all(k in s for k in images)][:2]
        expected.sort(key=lambda s: s["__key__"])  # in the split's order
        indexed = ShardSamples(shard_dir, "train")
        decoded = []
        original = ShardSamples.__getitem__
        monkeypatch.setattr(
            ShardSamples, "__getitem__", lambda self, i, seen=decoded, get=original: seen.append(i) or get(self, i)
        )
        picked = first_of_each(indexed, "brick", ["RCM", "FILL"], 2, images)
        monkeypatch.undo()
        assert len(decoded) == len(picked) == len(expected) > 0
        assert all(_same(a, b) for a, b in zip(picked, expected))
        assert all(_same(a, b) for a, b in zip(first_of_each(streamed, "brick", ["RCM", "FILL"], 2, images), expected))


@pytest.mark.parametrize("mode, shape", [("L", (5, 7)), ("RGB", (5, 7, 3)), ("RGBA", (5, 7, 4)), ("LA", (5, 7, 2))])
def test_png_shape_is_the_decoded_array_shape(mode, shape):
    buf = io.BytesIO()
    Image.new(mode, (7, 5)).save(buf, format="PNG")
    assert png_shape(buf.getvalue()[:26]) == shape == np.asarray(Image.open(io.BytesIO(buf.getvalue()))).shape
    with pytest.raises(ValueError, match="PNG"):
        png_shape(b"GIF89a" + bytes(20))


def test_kept_decoded_samples_are_decoded_once(shard_dir):
    kept = ShardSamples(shard_dir, "train", keep_decoded=True)
    assert kept[2] is kept[2]
    assert ShardSamples(shard_dir, "train")[2] is not ShardSamples(shard_dir, "train")[2]


@pytest.mark.slow
def test_segmentation_learns_the_same_from_the_shards_as_in_memory(pipeline_run, tmp_path):
    """The batches are drawn by index either way: the trained weights are equal to the bit."""
    weights = []
    for in_memory in (True, False):
        out = tmp_path / f"in_memory_{in_memory}"
        cfg = config_from(
            segmentation.SegmentationTrainConfig,
            {
                "shards": str(pipeline_run / "results/data/shards/segmentation"),
                "output_dir": str(out / "model"),
                "checkpoint_dir": str(out / "ckpt"),
                "samples_in_memory": in_memory,
                "model": json.loads((pipeline_run / "results/bricks/segmentation/train_config.json").read_text())[
                    "model"
                ],
                "train": {"steps": 3, "batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "log_every": 1},
            },
        )
        segmentation.main(cfg)
        weights.append(SegmentationModel.from_pretrained(out / "model").state_dict())
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.slow
def test_segmentation_scores_the_held_out_split_a_chunk_at_a_time(pipeline_run):
    """Decoding the held-out split a chunk at a time (a multiple of predict's batch) gives the figures of one pass
    over the split held in memory."""
    model = SegmentationModel.from_pretrained(pipeline_run / "results/bricks/segmentation")
    shards = pipeline_run / "results/data/shards/segmentation"
    whole = segmentation.evaluate(model, load_samples(shards, "val"), chunk=10**9)
    assert whole and segmentation.evaluate(model, ShardSamples(shards, "val"), chunk=32) == whole


def _rows(n: int):
    rng = np.random.default_rng(n)
    for i in range(n):
        yield {
            "images": [Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))],
            "prompt": [{"role": "user", "content": f"instruction {i}"}],
            "completion": [{"role": "assistant", "content": f"answer {i}"}],
        }


def test_rows_written_to_disk_are_the_rows_held_in_memory(tmp_path):
    """SFT and GRPO rows from a generator (paper scale) go to an Arrow file in a fresh folder and read back as the
    list would; the folder of an earlier call is not reused."""
    from functools import partial

    from lego_edit.training.vlm_sft import training_dataset

    held = training_dataset(list(_rows(5)), tmp_path / "unused")
    on_disk = training_dataset(partial(_rows, 5), tmp_path / "cache")
    assert len(on_disk) == len(held) == 5 and list(tmp_path.joinpath("cache").rglob("*.arrow"))
    for a, b in zip(held, on_disk):
        assert a["prompt"] == b["prompt"] and a["completion"] == b["completion"]
        assert np.array_equal(np.asarray(a["images"][0]), np.asarray(b["images"][0]))
    assert len(training_dataset(partial(_rows, 3), tmp_path / "cache")) == 3
