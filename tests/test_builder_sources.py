"""Reading real instruction data for the Builder (listings and Hugging Face copies), ADD-PRED's placement listing
from its add rows, and the Builder's tables from the teacher's verdicts."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from lego_edit.config_checks import ConfigError, check_config
from lego_edit.data.builder_sources import (
    BuilderSource,
    changed_box,
    is_add,
    placement_listing,
    read_builder_sources,
)
from lego_edit.data.builder_tables import TABLE_SCHEMA, kept_share, make_builder_tables
from lego_edit.data.dataset import INSTRUCTION_SCHEMA, write_table
from lego_edit.data.shards import read_listing
from lego_edit.data.teacher import verdict_schema


def _image(color, size=(40, 32), box=None, box_color=(255, 255, 255)) -> np.ndarray:
    a = np.zeros((size[1], size[0], 3), np.uint8)
    a[:] = color
    if box:
        x0, y0, x1, y1 = box
        a[y0 : y1 + 1, x0 : x1 + 1] = box_color
    return a


def _png(a) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _read(tmp_path, *sources, max_side=1024):
    rows, rejected = tmp_path / "rows.parquet", tmp_path / "rejected.parquet"
    read_builder_sources(list(sources), rows, rejected, tmp_path / "images", max_side=max_side)
    return pq.read_table(rows).to_pylist(), pq.read_table(rejected).to_pylist()


def test_csv_listing_with_mapped_columns_and_bad_rows(tmp_path):
    (tmp_path / "a.png").write_bytes(_png(_image((10, 20, 30))))
    (tmp_path / "a_t.png").write_bytes(_png(_image((10, 20, 30), box=(2, 2, 9, 9))))
    (tmp_path / "b.png").write_bytes(_png(_image((200, 0, 0))))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    fields = ["source", "edit", "after", "split", "key"]
    listing = tmp_path / "pairs.csv"
    with open(listing, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerow({"source": "a.png", "edit": "add a white square", "after": "a_t.png", "split": "validation"})
        w.writerow({"source": "a.png", "edit": "", "after": "", "split": ""})
        w.writerow({"source": "gone.png", "edit": "make it red", "after": "", "split": ""})
        w.writerow({"source": "broken.jpg", "edit": "make it red", "after": "", "split": ""})
        w.writerow({"source": "a.png", "edit": "make it red", "after": "broken.jpg", "split": ""})
        w.writerow({"source": "a.png", "edit": "make   it\tred", "after": "", "split": "holdout"})
        w.writerow({"source": "a.png", "edit": "make it blue", "after": "", "split": ""})
        w.writerow({"source": "b.png", "edit": "make it green", "after": "", "split": "", "key": "k7"})
        w.writerow({"source": "a.png", "edit": "make it pink", "after": "", "split": "", "key": "k7"})
    src = BuilderSource(
        path=str(listing),
        root=str(tmp_path),
        columns={"image": "source", "instruction": "edit", "target": "after", "id": "key"},
    )
    rows, rejected = _read(tmp_path, src)
    assert [(r["id"], r["split"], r["instruction"]) for r in rows] == [
        ("pairs_00000000", "val", "add a white square"),
        ("pairs_00000006", "train", "make it blue"),
        ("pairs_k7", "train", "make it green"),
    ]
    # the repeated id is rejected before its images are written: the first k7 row keeps its own image
    assert np.array_equal(np.asarray(Image.open(rows[2]["image_path"])), _image((200, 0, 0)))
    assert rows[0]["target_path"] and rows[1]["target_path"] is None and rows[0]["mask_path"] is None
    assert np.array_equal(np.asarray(Image.open(rows[0]["image_path"])), _image((10, 20, 30)))
    reasons = {r["row"]: r["reason"] for r in rejected}
    assert set(reasons) == {2, 3, 4, 5, 6, 9} and "'pairs_k7' repeats" in reasons[9]
    assert "empty instruction" in reasons[2] and "no such file" in reasons[3]
    assert reasons[4].startswith("image:") and "not a readable image" in reasons[4]
    assert reasons[5].startswith("target:") and "'holdout'" in reasons[6]


def test_hub_parquet_copy_of_magicbrush(tmp_path):
    """The hub's parquet files (data/<split>-xxxxx-of-xxxxx.parquet), images embedded as {bytes, path}."""
    img, tgt = _image((0, 0, 200), size=(300, 200)), _image((0, 0, 200), size=(300, 200), box=(10, 10, 60, 60))
    mask = np.zeros((200, 300), np.uint8)
    mask[10:61, 10:61] = 255
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "img_id": ["327726", "327726"],
            "turn_index": pa.array([1, 2], pa.int32()),
            "source_img": pa.array([{"bytes": _png(img), "path": None}] * 2, struct),
            "mask_img": pa.array([{"bytes": _png(np.dstack([mask] * 3)), "path": None}, None], struct),
            "instruction": ["Put a white box in the corner", "make the sky green"],
            "target_img": pa.array([{"bytes": _png(tgt), "path": None}, {"bytes": b"garbage", "path": None}], struct),
        }
    )
    (tmp_path / "mb" / "data").mkdir(parents=True)
    pq.write_table(table, tmp_path / "mb" / "data" / "dev-00000-of-00001.parquet")
    rows, rejected = _read(tmp_path, BuilderSource(path=str(tmp_path / "mb"), preset="magicbrush"), max_side=150)
    assert [(r["id"], r["split"]) for r in rows] == [("mb_327726_1", "val")]
    assert rejected[0]["row"] == 2 and rejected[0]["reason"].startswith("target:")
    assert Image.open(rows[0]["image_path"]).size == (150, 100)  # scaled to max_side, the target and mask with it
    assert Image.open(rows[0]["target_path"]).size == Image.open(rows[0]["mask_path"]).size == (150, 100)
    # ADD-PRED's listing: the row's mask gives the box, in the scaled image's pixels.
    listing = tmp_path / "placement.parquet"
    counts = placement_listing(tmp_path / "rows.parquet", listing)
    assert counts == {"add_rows": 1, "from_mask": 1, "from_difference": 0, "no_box": 0}
    ((split, key, images, meta),) = list(read_listing("placement", listing, "."))
    assert (split, key, meta["prompt"]) == ("val", "mb_327726_1", "Put a white box in the corner")
    assert np.abs(np.subtract(meta["box"], [5, 5, 30, 30])).max() <= 1 and images["image"].shape == (100, 150, 3)


def test_placement_from_the_targets_change_and_add_detection():
    src = _image((50, 50, 50), size=(64, 64))
    assert changed_box(src, _image((50, 50, 50), size=(64, 64), box=(8, 20, 15, 40))) == [8, 20, 15, 40]
    assert changed_box(src, src) is None  # nothing appeared
    assert changed_box(src, _image((250, 250, 250), size=(64, 64))) is None  # the whole image changed
    assert is_add({"instruction": "Please add a cat on the sofa", "category": None})
    assert is_add({"instruction": "put a hat on him", "category": None})
    assert not is_add({"instruction": "remove the address", "category": None})
    assert is_add({"instruction": "a cat", "category": "add"}) and not is_add({"instruction": "add", "category": "x"})


def test_placement_listing_without_add_rows_fails_clearly(tmp_path):
    (tmp_path / "a.png").write_bytes(_png(_image((10, 20, 30))))
    listing = tmp_path / "l.jsonl"
    listing.write_text(json.dumps({"image": "a.png", "instruction": "make it red"}) + "\n")
    _read(tmp_path, BuilderSource(path=str(listing), root=str(tmp_path)))
    with pytest.raises(ValueError, match="data.teacher.placement"):
        placement_listing(tmp_path / "rows.parquet", tmp_path / "p.parquet")


def _verdict(i, status, split="train"):
    return {
        "id": f"src_{i:04d}",
        "origin": "src",
        "split": split,
        "category": None,
        "instruction": f"edit {i}",
        "image_path": f"/data/{i}.png",
        "target_path": None,
        "mask_path": None,
        "answer": "{}",
        "workflow": '{"process":"p","pipeline":[]}' if status in ("kept", "filtered") else None,
        "reasoning": "",
        "status": status,
        "reason": "" if status == "kept" else f"{status}: why",
        "score": 0.1 if status == "kept" else None,
        "score_kind": "error_ratio" if status == "kept" else None,
    }


def test_builder_tables_mix_the_teacher_rows_with_the_shapes_world(tmp_path):
    shapes = [
        {f.name: None for f in INSTRUCTION_SCHEMA}
        | {"id": f"gt_{i}", "split": "train", "domain": "gt", "instruction": "x", "workflow": "{}", "parts": []}
        for i in range(40)
    ]
    write_table(pa.Table.from_pylist(shapes, schema=INSTRUCTION_SCHEMA), tmp_path / "gt.parquet")
    write_table(pa.Table.from_pylist(shapes[:10], schema=INSTRUCTION_SCHEMA), tmp_path / "open.parquet")
    statuses = ["kept", "filtered", "invalid", "kept", "request_failed", "unparseable"]
    chunks = []
    for c in range(2):  # two chunk files, written in reverse order
        path = tmp_path / f"chunk_{c}.parquet"
        part = [_verdict(i, s) for i, s in enumerate(statuses) if i % 2 == c][::-1]
        write_table(pa.Table.from_pylist(part, schema=verdict_schema()), path)
        chunks.append(path)
    out = {k: tmp_path / f"out_{k}" for k in ("gt", "open", "verdicts", "summary")}
    counts = make_builder_tables(
        chunks,
        tmp_path / "gt.parquet",
        tmp_path / "open.parquet",
        out["gt"],
        out["open"],
        out["verdicts"],
        out["summary"],
        shapes_fraction=0.5,
        seed=3,
    )
    gt = pq.read_table(out["gt"])
    assert gt.schema.equals(TABLE_SCHEMA)
    real = [r for r in gt.to_pylist() if r["origin"] == "src"]
    assert [r["id"] for r in real] == ["src_0000", "src_0003"] and all(r["domain"] == "gt" for r in real)
    assert 10 < counts["gt_rows"]["shapes"] < 30  # about half of the 40
    opened = [r for r in pq.read_table(out["open"]).to_pylist() if r["origin"] == "src"]
    assert len(opened) == 4 and all(r["workflow"] is None for r in opened)
    assert [r["id"] for r in pq.read_table(out["verdicts"]).to_pylist()] == [f"src_{i:04d}" for i in range(6)]
    assert kept_share(pq.read_table(out["verdicts"]).to_pylist()) == 2 / 5  # a failed request is no answer
    assert "40.0% of the teacher's answers kept" in out["summary"].read_text()
    # the same inputs give the same tables
    again = {k: tmp_path / f"again_{k}" for k in out}
    make_builder_tables(chunks, tmp_path / "gt.parquet", tmp_path / "open.parquet", *again.values(), None, 0.5, 3)
    assert again["gt"].read_bytes() == out["gt"].read_bytes()


def test_builder_sources_need_a_teacher(tmp_path):
    import yaml
    from data_fixtures import TEST_CONFIG

    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["data"]["builder_sources"] = [{"path": str(tmp_path)}]
    with pytest.raises(ConfigError, match="data.teacher"):
        check_config(cfg)
    cfg["data"]["builder_sources"] = [{"path": str(tmp_path / "nowhere")}]
    with pytest.raises(ConfigError, match=r"data.builder_sources\[0\].path"):
        check_config(cfg)
