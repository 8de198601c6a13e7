"""GEdit-Bench and ImgEdit-Bench readers on fixtures written in the published layouts."""

import json
import pickle
import subprocess
import sys
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from lego_edit.evaluation.benchmarks import (
    GEDIT_COLUMNS,
    GEDIT_TASK_TYPES,
    IMGEDIT_TYPES,
    BenchmarkItem,
    BenchmarkLayoutError,
    output_name,
    read_gedit,
    read_imgedit,
    write_gedit_fixture,
    write_imgedit_fixture,
)
from lego_edit.imageio import ImageReadError


@pytest.fixture(scope="module")
def gedit_parquet(tmp_path_factory):
    return write_gedit_fixture(tmp_path_factory.mktemp("gedit_parquet"), n_per_type=2, layout="parquet")


@pytest.fixture(scope="module")
def gedit_arrow(tmp_path_factory):
    return write_gedit_fixture(tmp_path_factory.mktemp("gedit_arrow"), n_per_type=2, layout="arrow")


@pytest.fixture(scope="module")
def imgedit(tmp_path_factory):
    return write_imgedit_fixture(tmp_path_factory.mktemp("imgedit"), n_per_type=2)


# ---------------------------------------------------------------- GEdit-Bench
def test_gedit_fixture_files_are_the_published_layouts(gedit_parquet, gedit_arrow):
    files = sorted(p.relative_to(gedit_parquet).as_posix() for p in gedit_parquet.rglob("*.parquet"))
    assert files == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    pf = pq.ParquetFile(gedit_parquet / files[0])
    schema = pf.schema_arrow
    assert tuple(schema.names) == GEDIT_COLUMNS
    for col in ("input_image", "input_image_raw"):  # image structs, as datasets writes them
        assert [f.name for f in schema.field(col).type] == ["bytes", "path"]
    assert str(schema.field("Intersection_exist").type) == "bool"
    assert b"huggingface" in schema.metadata
    assert pf.metadata.num_row_groups > 1  # exercises the per-row-group lazy reads
    assert (gedit_arrow / "dataset_dict.json").is_file()
    assert (gedit_arrow / "train" / "state.json").is_file()


@pytest.mark.parametrize("layout", ["gedit_parquet", "gedit_arrow"])
def test_read_gedit_counts_types_languages_keys(layout, request):
    path = request.getfixturevalue(layout)
    en = read_gedit(path)
    assert len(en) == 22 and {i.language for i in en} == {"en"}
    assert Counter(i.task_type for i in en) == {t: 2 for t in GEDIT_TASK_TYPES}
    both = read_gedit(path, languages=None)
    assert len(both) == 44
    assert Counter(i.language for i in both) == {"en": 22, "cn": 22}
    assert len({i.key for i in both}) == 44  # unique though en and cn share the dataset key
    assert len({i.extra["source_key"] for i in both}) == 22
    item = both[0]
    assert item.benchmark == "gedit" and item.key == f"{item.extra['source_key']}_{item.language}"
    assert isinstance(item.extra["intersection_exist"], bool)
    assert read_gedit(path, languages="cn")[0].instruction != en[0].instruction


@pytest.mark.parametrize("layout", ["gedit_parquet", "gedit_arrow"])
def test_gedit_images_decode_lazily_to_rgb(layout, request):
    path = request.getfixturevalue(layout)
    items = read_gedit(path, languages=None)
    assert all(callable(i.image) for i in items)
    img = items[-1].load_image()
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    raw = read_gedit(path, image_column="input_image_raw")[-1].load_image()
    assert raw.shape == (96, 128, 3)
    clone = pickle.loads(pickle.dumps(items[7]))  # items cross process boundaries in the batch editor
    assert np.array_equal(clone.load_image(), items[7].load_image())


def test_both_gedit_layouts_hold_the_same_rows(gedit_parquet, gedit_arrow):
    a, b = read_gedit(gedit_parquet, None), read_gedit(gedit_arrow, None)
    assert [(i.key, i.instruction, i.task_type, i.extra["intersection_exist"]) for i in a] == [
        (i.key, i.instruction, i.task_type, i.extra["intersection_exist"]) for i in b
    ]
    for i, j in zip(a[::7], b[::7]):
        assert np.array_equal(i.load_image(), j.load_image())


def test_gedit_other_entry_points(gedit_parquet, gedit_arrow, tmp_path):
    one_file = gedit_parquet / "data" / "train-00001-of-00002.parquet"
    assert len(read_gedit(one_file, None)) == 22
    assert len(read_gedit(gedit_arrow / "train", None)) == 44  # a plain Dataset folder, not a DatasetDict
    loose = tmp_path / "train" / "data-00000-of-00001.arrow"  # arrow files without save_to_disk's json
    loose.parent.mkdir()
    loose.write_bytes((gedit_arrow / "train" / "data-00000-of-00001.arrow").read_bytes())
    items = read_gedit(tmp_path, None)
    assert len(items) == 44 and items[-1].load_image().shape == (48, 64, 3)


def test_gedit_output_name_follows_step1x_layout(gedit_parquet):
    item = read_gedit(gedit_parquet, "cn")[0]
    assert output_name(item) == f"fullset/{item.task_type}/cn/{item.extra['source_key']}.png"


def test_gedit_fixture_is_deterministic(tmp_path):
    a = write_gedit_fixture(tmp_path / "a", seed=3)
    b = write_gedit_fixture(tmp_path / "b", seed=3)
    c = write_gedit_fixture(tmp_path / "c", seed=4)
    for name in ("train-00000-of-00002.parquet", "train-00001-of-00002.parquet"):
        assert (a / "data" / name).read_bytes() == (b / "data" / name).read_bytes()
    assert not np.array_equal(read_gedit(a)[0].load_image(), read_gedit(c)[0].load_image())


def test_gedit_missing_column_is_named(gedit_parquet, tmp_path):
    table = pq.read_table(gedit_parquet / "data" / "train-00000-of-00002.parquet")
    bad = tmp_path / "bad.parquet"
    pq.write_table(table.drop_columns(["Intersection_exist"]), bad)
    with pytest.raises(BenchmarkLayoutError, match=r"bad\.parquet.*missing GEdit-Bench column.*Intersection_exist"):
        read_gedit(bad)


def test_gedit_wrong_layouts_raise_clearly(tmp_path, gedit_parquet):
    with pytest.raises(BenchmarkLayoutError, match="no such file or folder"):
        read_gedit(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkLayoutError, match="not a GEdit-Bench copy"):
        read_gedit(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(BenchmarkLayoutError, match="must be .parquet"):
        read_gedit(tmp_path / "notes.txt")
    (tmp_path / "fake.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(BenchmarkLayoutError, match="not a readable parquet file"):
        read_gedit(tmp_path / "fake.parquet")
    with pytest.raises(ValueError, match="unknown GEdit-Bench language"):
        read_gedit(gedit_parquet, languages=("fr",))
    with pytest.raises(ValueError, match="image_column"):
        read_gedit(gedit_parquet, image_column="output_image")


def test_gedit_dataset_dict_without_train_split(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"a": [1]}).save_to_disk(str(tmp_path / "one"))
    with pytest.raises(BenchmarkLayoutError, match=r"missing GEdit-Bench column.*task_type"):
        read_gedit(tmp_path / "one")
    datasets.DatasetDict({"test": datasets.Dataset.from_dict({"a": [1]})}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(BenchmarkLayoutError, match=r"splits \['test'\].*'train'"):
        read_gedit(tmp_path / "dd")


def test_gedit_bad_values_raise(gedit_parquet, tmp_path):
    table = pq.read_table(gedit_parquet / "data" / "train-00000-of-00002.parquet")
    rows = table.to_pylist()
    rows[0]["task_type"] = "teleport"
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), tmp_path / "t.parquet")
    with pytest.raises(BenchmarkLayoutError, match="task_type 'teleport'"):
        read_gedit(tmp_path / "t.parquet")
    rows[0]["task_type"], rows[0]["key"] = "color_alter", "../escape"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), tmp_path / "k.parquet")
    with pytest.raises(BenchmarkLayoutError, match="not a safe file-name stem"):
        read_gedit(tmp_path / "k.parquet")


def test_gedit_corrupt_image_bytes_fail_at_load_naming_the_item(gedit_parquet, tmp_path):
    import pyarrow as pa

    table = pq.read_table(gedit_parquet / "data" / "train-00000-of-00002.parquet")
    rows = table.to_pylist()
    rows[0]["input_image"] = {"bytes": b"garbage", "path": None}
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), tmp_path / "c.parquet")
    items = read_gedit(tmp_path / "c.parquet", None)
    with pytest.raises(ImageReadError, match=rf"gedit item '{items[0].key}'.*not readable"):
        items[0].load_image()
    assert items[1].load_image().shape == (48, 64, 3)


def test_readers_stay_light():
    code = (
        "import sys, lego_edit.evaluation.benchmarks, lego_edit.evaluation.judge; "
        "bad = [m for m in ('torch', 'snakemake') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- ImgEdit-Bench
def test_imgedit_fixture_layout(imgedit):
    json_path, root = imgedit
    data = json.loads(json_path.read_text())
    assert json_path.name == "basic_edit.json" and len(data) == 18
    assert all(set(v) == {"id", "prompt", "edit_type"} and k.isdigit() for k, v in data.items())
    assert Counter(v["edit_type"] for v in data.values())["compose"] == 2
    folders = {v["id"].rsplit("/", 1)[0] for v in data.values()}
    assert {"for_add", "style", "daily object", "compose/human", "compose/objects"} <= folders
    assert all((root / v["id"]).is_file() for v in data.values())


def test_read_imgedit(imgedit):
    items = read_imgedit(*imgedit)
    assert len(items) == 18
    assert Counter(i.task_type for i in items) == {t: 2 for t in IMGEDIT_TYPES}
    hybrid = [i for i in items if i.task_type == "hybrid"]
    assert all(i.extra["edit_type"] == "compose" for i in hybrid)
    assert list(json.loads(imgedit[0].read_text())) == [i.key for i in items]  # the JSON's order
    img = items[0].load_image()
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert output_name(items[0]) == f"{items[0].key}.png"


def test_imgedit_missing_image_fails_only_at_load(imgedit, tmp_path):
    json_path, root = imgedit
    data = json.loads(json_path.read_text())
    key = next(iter(data))
    data[key]["id"] = "animal/does_not_exist.jpg"
    (tmp_path / "basic_edit.json").write_text(json.dumps(data))
    items = read_imgedit(tmp_path / "basic_edit.json", root)
    assert len(items) == 18
    with pytest.raises(ImageReadError, match=rf"imgedit item '{key}'.*does_not_exist\.jpg.*no such file"):
        items[0].load_image()
    assert items[1].load_image().shape == (64, 64, 3)


def test_imgedit_first_release_alter_is_adjust(tmp_path, imgedit):
    (tmp_path / "b.json").write_text(json.dumps({"7": {"id": "x.jpg", "prompt": "p", "edit_type": "alter"}}))
    (item,) = read_imgedit(tmp_path / "b.json", imgedit[1])
    assert item.task_type == "adjust" and item.extra["edit_type"] == "alter"


@pytest.mark.parametrize(
    "content, message",
    [
        ([{"id": "a.jpg"}], "expected a JSON object keyed by id"),
        ({"1": {"id": "a.jpg", "edit_type": "add"}}, r"entry '1'.*missing.*\['prompt'\]"),
        ({"1": {"id": "a.jpg", "prompt": "p", "edit_type": "teleport"}}, "edit_type 'teleport'"),
        ({"1": {"id": "../../etc/passwd", "prompt": "p", "edit_type": "add"}}, "inside the image root"),
        ({"a/b": {"id": "a.jpg", "prompt": "p", "edit_type": "add"}}, "not a safe file-name stem"),
        ({}, "no entries"),
    ],
)
def test_imgedit_bad_json(tmp_path, content, message):
    (tmp_path / "b.json").write_text(json.dumps(content))
    with pytest.raises(BenchmarkLayoutError, match=message):
        read_imgedit(tmp_path / "b.json", tmp_path)


def test_imgedit_missing_files(tmp_path, imgedit):
    with pytest.raises(BenchmarkLayoutError, match="no such file"):
        read_imgedit(tmp_path / "basic_edit.json", tmp_path)
    with pytest.raises(BenchmarkLayoutError, match="image root is not a folder"):
        read_imgedit(imgedit[0], tmp_path / "nope")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(BenchmarkLayoutError, match="not valid JSON"):
        read_imgedit(tmp_path / "b.json", tmp_path)


def test_imgedit_fixture_is_deterministic(tmp_path):
    a, _ = write_imgedit_fixture(tmp_path / "a", seed=1)
    b, _ = write_imgedit_fixture(tmp_path / "b", seed=1)
    assert a.read_text() == b.read_text()
    ia, ib = read_imgedit(a, a.parent / "images"), read_imgedit(b, b.parent / "images")
    assert all(np.array_equal(x.load_image(), y.load_image()) for x, y in zip(ia, ib))


def test_item_accepts_paths_bytes_and_callables(imgedit):
    path = str(imgedit[1] / json.loads(imgedit[0].read_text())[read_imgedit(*imgedit)[0].key]["id"])
    data = open(path, "rb").read()
    for source in (path, data, lambda: data, lambda: {"bytes": None, "path": path}):
        item = BenchmarkItem("x", "k", "i", "t", "en", source)
        assert item.load_image().shape == (64, 64, 3)
    with pytest.raises(ImageReadError, match="x item 'k'.*unsupported image value"):
        BenchmarkItem("x", "k", "i", "t", "en", lambda: 42).load_image()


def test_gedit_editor_input_is_sized_as_the_published_preparation():
    """GEdit-Bench's generate_image_example.py: about 512x512 pixels, sides multiples of 32, one width step after
    rounding towards the area."""
    from lego_edit.evaluation.benchmarks import area_dimensions

    assert area_dimensions(512 * 512, 1.0) == (512, 512)
    assert area_dimensions(512 * 512, 4 / 3) == (608, 448)  # 576x448 rounds below the area: one step wider
    assert area_dimensions(512 * 512, 16 / 9) == (704, 384)  # 672x384 rounds below it too


def test_gedit_published_inputs_edit_the_raw_image_and_judge_against_input_image(gedit_parquet):
    item = read_gedit(gedit_parquet, published_inputs=True)[0]
    edited_from, judged_against = item.load_image(), item.load_judge_image()
    assert edited_from.shape == (448, 608, 3)  # input_image_raw (128x96) resized to about 512x512
    assert judged_against.shape == (48, 64, 3)  # input_image, as the published evaluation saves the source
    plain = read_gedit(gedit_parquet)[0]
    assert plain.load_image().shape == plain.load_judge_image().shape == (48, 64, 3)


def test_gedit_evaluation_items_follow_the_published_inputs_by_default(gedit_parquet):
    from lego_edit.evaluation.runner import load_items

    items = load_items("gedit", {"path": str(gedit_parquet)})
    assert {it.language for it in items} == {"en", "cn"}
    source = items[0].load()
    assert source.shape == (448, 608, 3) and items[0].load_judge_source(source).shape == (48, 64, 3)
