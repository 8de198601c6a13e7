"""Webdataset shards: write -> manifest -> read round trips, digests from the raw tar members, real-data listings."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_fixtures import tar_samples
from PIL import Image

from lego_edit.data import brick_samples as bs
from lego_edit.data.dataset import InstructionConfig, SceneConfig, load_scenes, make_instructions, make_scenes
from lego_edit.data.referring import resolve
from lego_edit.data.shapes import Scene, caption, place_box, render_layers
from lego_edit.data.shards import (
    ShardConfig,
    build_shards,
    encode_sample,
    load_samples,
    read_listing,
    read_manifest,
    sample_digest,
    write_shard_set,
)
from lego_edit.imageio import encode_png

MANIFEST_COLUMNS = ["key", "shard", "sha256", "split", "kind"]


def _image(seed: int, h: int = 16, w: int = 20) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(seed: int, h: int = 16, w: int = 20) -> np.ndarray:
    return np.where(np.random.default_rng(seed).random((h, w)) < 0.4, 255, 0).astype(np.uint8)


# --- write -> manifest -> read -----------------------------------------------------------------------------


def test_round_trip_of_known_samples(tmp_path):
    samples = {
        split: [
            (
                f"{split}_{i}",
                {"source": _image(i), "mask": _mask(i), "target": _image(100 + i)},
                {"brick": "RCM" if i % 2 else "FILL", "prompt": f"prompt {i}"},
            )
            for i in range(n)
        ]
        for split, n in (("train", 5), ("val", 2))
    }
    table = write_shard_set(samples, "edit", tmp_path, samples_per_shard=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "edit-train-000000.tar",
        "edit-train-000001.tar",
        "edit-train-000002.tar",
        "edit-val-000000.tar",
        "manifest.parquet",
    ]
    manifest = read_manifest(tmp_path)
    assert manifest.column_names == MANIFEST_COLUMNS
    assert table.to_pylist() == manifest.to_pylist()
    rows = manifest.to_pylist()
    assert [(r["key"], r["shard"], r["split"], r["kind"]) for r in rows] == [
        ("train_0", "edit-train-000000.tar", "train", "FILL"),
        ("train_1", "edit-train-000000.tar", "train", "RCM"),
        ("train_2", "edit-train-000001.tar", "train", "FILL"),
        ("train_3", "edit-train-000001.tar", "train", "RCM"),
        ("train_4", "edit-train-000002.tar", "train", "FILL"),
        ("val_0", "edit-val-000000.tar", "val", "FILL"),
        ("val_1", "edit-val-000000.tar", "val", "RCM"),
    ]

    back = load_samples(tmp_path)
    assert [s["__key__"] for s in back] == [r["key"] for r in rows]
    for s, (key, images, meta) in zip(back, samples["train"] + samples["val"]):
        assert s["__key__"] == key
        for name, array in images.items():
            assert s[name].dtype == np.uint8 and np.array_equal(s[name], array), (key, name)
        assert {k: v for k, v in s.items() if k not in images and k != "__key__"} == {**meta, "split": key[:-2]}
    assert [s["__key__"] for s in load_samples(tmp_path, split="val")] == ["val_0", "val_1"]
    assert [s["__key__"] for s in load_samples(tmp_path, kinds=["RCM"])] == ["train_1", "train_3", "val_1"]
    assert load_samples(tmp_path, split="test") == []


def test_sha256_in_the_manifest_matches_the_raw_tar_members(tmp_path):
    samples = {
        "train": [(f"k{i:03d}", {"image": _image(i), "mask": _mask(i)}, {"task": "SOS", "text": ""}) for i in range(7)]
    }
    write_shard_set(samples, "segmentation", tmp_path, samples_per_shard=3)
    rows = read_manifest(tmp_path).to_pylist()
    members = {}
    for shard in sorted({r["shard"] for r in rows}):
        got = tar_samples(tmp_path / shard)
        assert sorted(got) == sorted(r["key"] for r in rows if r["shard"] == shard)
        members.update(got)
    for i, r in enumerate(rows):
        raw = members[r["key"]]
        assert sorted(raw) == ["image.png", "json", "mask.png"]
        assert sample_digest({"__key__": r["key"], **raw}) == r["sha256"]
        # the bytes are the encoder's own: PNGs of the arrays and sorted compact JSON
        assert raw["image.png"] == encode_png(_image(i)) and raw["mask.png"] == encode_png(_mask(i))
        assert raw["json"] == b'{"split":"train","task":"SOS","text":""}'
    # a digest covers names and bytes, not the key
    s = encode_sample("a", {"image": _image(0)}, {"x": 1})
    assert sample_digest(s) == sample_digest({**s, "__key__": "b"})
    assert sample_digest(s) != sample_digest({**s, "json": b'{"x":2}'})
    assert sample_digest(s) != sample_digest({"__key__": "a", "img.png": s["image.png"], "json": s["json"]})


def test_tar_members_carry_fixed_metadata(tmp_path):
    write_shard_set({"train": [("a", {"image": _image(1)}, {"caption": "x"})]}, "captioning", tmp_path, 10)
    with tarfile.open(tmp_path / "captioning-train-000000.tar") as tar:
        info = [(m.name, m.mtime, m.uname, m.gname) for m in tar.getmembers()]
    assert info == [("a.image.png", 0, "lego-edit", "lego-edit"), ("a.json", 0, "lego-edit", "lego-edit")]


# --- shapes-world families ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    make_scenes(SceneConfig(seed=4, train=8, val=2, test=3), root / "scenes.parquet", root / "scene_images")
    for domain in ("gt", "open"):
        make_instructions(
            InstructionConfig(seed=4, per_scene=1),
            domain,
            root / "scenes.parquet",
            root / f"{domain}.parquet",
            root / "targets" / domain,
        )
    return root


def _build(world, family, out, **cfg):
    return build_shards(
        family,
        ShardConfig(seed=4, **cfg),
        out,
        scenes_path=world / "scenes.parquet",
        instruction_paths=[world / "gt.parquet", world / "open.parquet"],
    )


@pytest.mark.parametrize("family", bs.FAMILIES)
def test_family_shards_round_trip(world, tmp_path, family):
    table = _build(world, family, tmp_path / "a", per_scene=2, samples_per_shard=4)
    rows = table.to_pylist()
    assert len(rows) > 0 and len({r["key"] for r in rows}) == len(rows)
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    members = {}
    for shard in sorted({r["shard"] for r in rows}):
        got = tar_samples(tmp_path / "a" / shard)
        assert 1 <= len(got) <= 4
        members.update(got)
    assert sorted(members) == sorted(r["key"] for r in rows)
    for r in rows:
        assert sample_digest({"__key__": r["key"], **members[r["key"]]}) == r["sha256"]
        assert json.loads(members[r["key"]]["json"])["split"] == r["split"]
    decoded = {s["__key__"]: s for s in load_samples(tmp_path / "a")}  # in shard-name order: test, train, val
    assert sorted(decoded) == sorted(r["key"] for r in rows)
    for r in rows:
        s = decoded[r["key"]]
        assert (s.get("task") or s.get("brick") or s.get("kind") or family) == r["kind"]
    # the same config gives byte-identical shards
    _build(world, family, tmp_path / "b", per_scene=2, samples_per_shard=4)
    for path in sorted((tmp_path / "a").iterdir()):
        assert path.read_bytes() == (tmp_path / "b" / path.name).read_bytes(), path.name


def test_family_samples_agree_with_their_scenes(world, tmp_path):
    scenes = {f"{r['scene_id']:06d}": Scene.from_json(r["scene"]) for r in load_scenes(world / "scenes.parquet")}
    scene_of = lambda key: scenes[key.split("_")[1]]
    _build(world, "segmentation", tmp_path / "seg", per_scene=4)
    tasks = set()
    for s in load_samples(tmp_path / "seg"):
        tasks.add(s["task"])
        assert s["image"].shape == (64, 64, 3) and s["mask"].shape == (64, 64)
        assert set(np.unique(s["mask"])) <= {0, 255}
        if s["task"] == "RES":  # the expression picks out exactly the masked object
            scene = scene_of(s["__key__"])
            index = resolve(scene, s["text"])
            assert index is not None
            assert np.array_equal(s["mask"] > 0, render_layers(scene)[1] == index)
        if s["task"] == "MASK-SEG":
            assert ((s["hint"] > 0) >= (s["mask"] > 0)).all()  # the hint covers the object
    assert tasks == {"RES", "SOS", "MASK-SEG"}
    _build(world, "captioning", tmp_path / "cap")
    for s in load_samples(tmp_path / "cap"):
        assert s["caption"] == caption(scene_of(s["__key__"]))
    _build(world, "placement", tmp_path / "place")
    for s in load_samples(tmp_path / "place"):
        x1, y1, x2, y2 = s["box"]
        assert (x2 - x1 + 1, y2 - y1 + 1) in {
            (place_box("center", size, 64, 64)[2],) * 2 for size in ("small", "medium", "large")
        }
    _build(world, "edit", tmp_path / "edit", bricks=["RCM", "ENV"])
    kinds = [s["brick"] for s in load_samples(tmp_path / "edit")]
    assert set(kinds) == {"RCM", "ENV"} and kinds.count("ENV") == 13  # every scene can take an environment
    _build(world, "critic", tmp_path / "critic")
    labels = [s["label"] for s in load_samples(tmp_path / "critic")]
    assert labels.count(1) == 26 and labels.count(0) == 26  # one right and one wrong edit per instruction


# --- real data: listings ------------------------------------------------------------------------------------


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _listing_rows(family, root):
    """Two rows per family, their files written under ``root``, and the arrays read_listing must return."""
    rows, expected = [], []
    for i in range(2):
        img, mask = _image(10 + i), _mask(20 + i)
        _write_png(root / "img" / f"{i}.png", img)
        _write_png(root / "msk" / f"{i}.png", mask)
        if family == "segmentation":
            rows.append(
                {
                    "key": f"seg{i}",
                    "split": "val" if i else "train",
                    "image": f"img/{i}.png",
                    "mask": f"msk/{i}.png",
                    "task": "RES",
                    "text": f"the red circle {i}",
                }
            )
            expected.append(({"image": img, "mask": mask}, {"task": "RES", "text": f"the red circle {i}"}))
        elif family == "captioning":
            rows.append({"key": f"cap{i}", "split": "train", "image": f"img/{i}.png", "caption": f"a photo {i}"})
            expected.append(({"image": img}, {"caption": f"a photo {i}"}))
        else:
            target = _image(30 + i)
            _write_png(root / "tgt" / f"{i}.png", target)
            rows.append(
                {
                    "key": f"ed{i}",
                    "split": "test",
                    "source": f"img/{i}.png",
                    "target": f"tgt/{i}.png",
                    "mask": f"msk/{i}.png",
                    "brick": "INPAINT",
                    "prompt": "",
                    "score": 0.25 * (i + 1),
                }
            )
            expected.append(
                (
                    {"source": img, "target": target, "mask": mask},
                    {"brick": "INPAINT", "prompt": "", "score": 0.25 * (i + 1)},
                )
            )
    return rows, expected


def _write_listing(rows, path):
    if path.suffix == ".csv":
        import csv

        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
@pytest.mark.parametrize("family", ["segmentation", "captioning", "edit"])
def test_read_listing(tmp_path, family, suffix):
    root = tmp_path / "data"
    rows, expected = _listing_rows(family, root)
    listing = tmp_path / f"listing{suffix}"
    _write_listing(rows, listing)
    got = list(read_listing(family, listing, root))
    assert [(split, key) for split, key, _, _ in got] == [(r["split"], r["key"]) for r in rows]
    for (_, _, images, meta), (want_images, want_meta) in zip(got, expected):
        assert sorted(images) == sorted(want_images)
        for name, array in want_images.items():
            assert images[name].dtype == np.uint8 and np.array_equal(images[name], array), name
        assert meta == want_meta
    # and through build_shards into a shard set
    source = {"listing": str(listing), "root": str(root)}
    table = build_shards(family, ShardConfig(), tmp_path / "shards", source=source)
    assert [r["key"] for r in table.to_pylist()] == [r["key"] for r in rows]
    back = load_samples(tmp_path / "shards")
    for s, (want_images, want_meta) in zip(back, expected):
        for name, array in want_images.items():
            assert np.array_equal(s[name], array)
        assert {k: s[k] for k in want_meta} == want_meta


def test_listing_defaults_and_conversions(tmp_path):
    _write_png(tmp_path / "a.png", _image(1, 32, 32))
    _write_png(tmp_path / "m.png", _mask(2, 16, 16))  # a mask of another size is resized to the image's
    listing = tmp_path / "l.csv"
    listing.write_text('image,prompt,box\na.png,add a cat,"[1, 2, 10, 12]"\n')
    [(split, key, images, meta)] = list(read_listing("placement", listing, tmp_path))
    assert (split, key, meta) == ("train", "placement_00000000", {"prompt": "add a cat", "box": [1, 2, 10, 12]})
    listing.write_text("image,mask,task,text,hint\na.png,m.png,SOS,,\n")
    [(_, _, images, meta)] = list(read_listing("segmentation", listing, tmp_path))
    assert images["mask"].shape == (32, 32) and meta == {"task": "SOS", "text": ""}  # as shapes-world SOS samples
    listing.write_text("source,candidate,instruction,label\na.png,a.png,make it red,1\n")
    [(_, _, _, meta)] = list(read_listing("critic", listing, tmp_path))
    assert meta == {"instruction": "make it red", "label": 1}
    jsonl = tmp_path / "l.jsonl"  # a label of 0 is a value, not a missing field
    jsonl.write_text('{"source": "a.png", "candidate": "a.png", "instruction": "x", "label": 0, "split": "val"}\n')
    [(split, _, _, meta)] = list(read_listing("critic", jsonl, tmp_path))
    assert (split, meta) == ("val", {"instruction": "x", "label": 0})
    listing.write_text('image,prompt,box\na.png,add a cat,"[1, 2, 10]"\n')
    with pytest.raises(ValueError, match=r"row 1, field 'box': \[1, 2, 10\] is not 4 integers"):
        list(read_listing("placement", listing, tmp_path))
    listing.write_text("source,target,mask,brick,prompt,score\na.png,a.png,m.png,INPAINT,,high\n")
    with pytest.raises(ValueError, match=r"row 1, field 'score': cannot read 'high' as a number"):
        list(read_listing("edit", listing, tmp_path))


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_bad_listing_names_the_row_and_field(tmp_path, suffix):
    root = tmp_path / "data"
    rows, _ = _listing_rows("edit", root)
    bad = [dict(rows[0]), {**rows[1], "target": "tgt/missing.png"}]
    listing = tmp_path / f"l{suffix}"
    _write_listing(bad, listing)
    with pytest.raises(ValueError, match=r"row 2\b.*'target'.*missing\.png"):
        list(read_listing("edit", listing, root))
    no_mask = [{k: v for k, v in r.items() if k != "mask"} for r in rows]
    _write_listing(no_mask, listing)
    with pytest.raises(ValueError, match=r"row 1: missing mask"):
        list(read_listing("edit", listing, root))
    _write_listing([rows[0], {**rows[1], "split": "training"}], listing)
    with pytest.raises(ValueError, match=r"row 2\b.*'split'.*'training'"):
        list(read_listing("edit", listing, root))
    _write_listing([rows[0], {**rows[1], "key": rows[0]["key"]}], listing)
    with pytest.raises(ValueError, match=r"row 2\b.*'key'.*ed0.*row 1"):
        list(read_listing("edit", listing, root))
    _write_listing([{**rows[0], "key": "photo.001"}], listing)
    with pytest.raises(ValueError, match=r"row 1\b.*'key'.*photo\.001"):
        list(read_listing("edit", listing, root))
    # nothing was written for the bad listing
    with pytest.raises(ValueError, match=r"row 1\b.*'key'"):
        build_shards("edit", ShardConfig(), tmp_path / "out", source={"listing": str(listing), "root": str(root)})
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_listing_file_problems(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv does not exist"):
        list(read_listing("captioning", tmp_path / "nope.csv", tmp_path))
    (tmp_path / "l.txt").write_text("image,caption\n")
    with pytest.raises(ValueError, match=r"use \.csv, \.parquet or \.jsonl"):
        list(read_listing("captioning", tmp_path / "l.txt", tmp_path))


def test_listing_shards_stream_and_match_the_grouped_writer(tmp_path):
    """Rows of interleaved splits go straight into one open writer per split: the files and manifest are those the
    split-by-split writer makes of the same samples, and the listing is read lazily (a bad last line surfaces only
    after the rows before it were read)."""
    root = tmp_path / "data"
    img = _image(3)
    _write_png(root / "a.png", img)
    splits = ["train", "val", "train", "test", "train", "val", "train"]
    rows = [{"key": f"c{i}", "split": s, "image": "a.png", "caption": f"a photo {i}"} for i, s in enumerate(splits)]
    listing = tmp_path / "l.jsonl"
    _write_listing(rows, listing)
    streamed = build_shards(
        "captioning",
        ShardConfig(samples_per_shard=2),
        tmp_path / "s",
        source={"listing": str(listing), "root": str(root)},
    )
    grouped: dict[str, list] = {}
    for split, key, images, meta in read_listing("captioning", listing, root):
        grouped.setdefault(split, []).append((key, images, meta))
    reference = write_shard_set(grouped, "captioning", tmp_path / "g", 2)
    assert streamed.equals(reference)
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "g").iterdir())
    for name in names:
        assert (tmp_path / "s" / name).read_bytes() == (tmp_path / "g" / name).read_bytes(), name
    with open(listing, "a") as f:
        f.write("{broken\n")
    got = read_listing("captioning", listing, root)
    assert [next(got)[1] for _ in range(len(rows))] == [r["key"] for r in rows]
    with pytest.raises(ValueError, match=r"line 8: not JSON"):
        next(got)
