"""The segmentation model's two-stage RES: candidate objects from SOS, a learned selector picks one (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lego_edit.models.segmentation import (
    SegmentationConfig,
    SegmentationModel,
    candidate_regions,
    region_boxes,
    task_text,
)
from lego_edit.training.segmentation import res_candidates

TINY = {
    "image_size": 32,
    "text": {
        "hidden_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "intermediate_size": 64,
        "max_length": 12,
        "vocab_size": 300,
    },
    "unet": {"block_out_channels": [8, 16], "attention_levels": 1},
    "embed_dim": 8,
    "max_candidates": 4,
}
TEXTS = [task_text("RES", f"{c} square") for c in ("red", "blue", "green")] * 4 + [task_text("SOS")] * 4


def scene(size: int = 32) -> tuple[np.ndarray, list[np.ndarray]]:
    """Two squares on grey: red at the left, blue at the right (and their masks)."""
    image = np.full((size, size, 3), 128, np.uint8)
    masks = []
    for x0, colour in ((3, (220, 20, 20)), (20, (20, 20, 220))):
        m = np.zeros((size, size), bool)
        m[10:20, x0 : x0 + 8] = True
        image[m] = colour
        masks.append(m)
    return image, masks


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SegmentationModel.build(SegmentationConfig(**TINY), TEXTS).eval()


def test_candidate_regions_are_connected_regions_largest_first():
    mask = np.zeros((20, 20), bool)
    mask[1:3, 1:3] = True  # 4 px
    mask[10:15, 10:15] = True  # 25 px
    mask[5:8, 15:18] = True  # 9 px
    regions = candidate_regions(mask, limit=2)
    assert regions.shape == (2, 20, 20)
    assert [int(r.sum()) for r in regions] == [25, 9]
    assert candidate_regions(np.zeros((5, 5), bool), 3).shape == (0, 5, 5)


def test_region_boxes_are_x1_y1_x2_y2():
    regions = torch.zeros(1, 2, 10, 12)
    regions[0, 0, 2:5, 7:11] = 1  # rows 2-4, columns 7-10
    assert region_boxes(regions).tolist() == [[[7, 2, 11, 5], [0, 0, 12, 10]]]  # an empty region: the whole image


def test_res_answer_is_one_whole_sos_region(model):
    image, _ = scene()
    with torch.no_grad():
        x, h = model.prepare([image])
        sos = torch.sigmoid(model(x, h, model.prompt_encoder.tokenize([task_text("SOS")])))[0, 0].numpy()
    regions = candidate_regions(sos > model.cfg.threshold, model.cfg.max_candidates)
    res = model.predict([image], ["RES"], ["red square"])[0] > 0
    if len(regions):  # an untrained model's SOS map may hold no region at all; then RES falls back to its own map
        assert any(np.array_equal(res, r) for r in regions)


def test_res_at_another_input_size_keeps_the_input_size(model):
    image, _ = scene(48)
    out = model.predict([image], ["RES"], ["blue square"])[0]
    assert out.shape == (48, 48) and set(np.unique(out)) <= {0, 255}


def test_training_candidates_point_at_the_named_object():
    image, masks = scene()
    attributes = np.zeros((32, 32, 4), np.uint8)
    attributes[masks[0] | masks[1], 0] = 1
    data = {
        "attributes": torch.from_numpy(attributes).permute(2, 0, 1)[None].repeat(3, 1, 1, 1),
        "masks": torch.from_numpy(np.stack([masks[1], masks[0], masks[0]])[:, None].astype(np.uint8)),
        "tasks": ["RES", "RES", "SOS"],
    }
    labels, target = res_candidates(data, limit=4)
    assert target[2] == -1  # not a RES sample
    for i, named in ((0, masks[1]), (1, masks[0])):
        picked = labels[i].numpy() == int(target[i]) + 1
        assert np.array_equal(picked, named)
    assert res_candidates({**data, "attributes": None}, 4) is None


@pytest.fixture(scope="module")
def learned():
    """A few dozen steps on one two-object scene, selector loss only."""
    torch.manual_seed(0)
    m = SegmentationModel.build(SegmentationConfig(**TINY), TEXTS)
    image, masks = scene()
    x, _ = m.prepare([image, image])
    ids = m.prompt_encoder.tokenize([task_text("RES", "red square"), task_text("RES", "blue square")])
    cand = torch.from_numpy(np.stack(masks)[None].repeat(2, 0).astype(np.float32))
    target = torch.tensor([0, 1])
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(m.select(x, ids, cand), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval(), (x, ids, cand)


def test_selector_learns_to_pick_by_colour(learned):
    m, (x, ids, cand) = learned
    with torch.no_grad():
        assert m.select(x, ids, cand).argmax(-1).tolist() == [0, 1]  # red -> left, blue -> right


def test_selector_weights_round_trip(learned, tmp_path):
    m, _ = learned
    image, _ = scene()
    before = m.predict([image, image], ["RES", "RES"], ["red square", "blue square"])
    m.save_pretrained(tmp_path / "seg")
    again = SegmentationModel.from_pretrained(tmp_path / "seg", device="cpu")
    after = again.predict([image, image], ["RES", "RES"], ["red square", "blue square"])
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_a_model_saved_without_a_selector_loads_and_thresholds_its_own_map(tmp_path):
    """A model directory from before the selector (its config has no selector keys) loads without one."""
    import json

    torch.manual_seed(0)
    m = SegmentationModel.build(SegmentationConfig(**{**TINY, "selector_layers": 0}), TEXTS)
    m.save_pretrained(tmp_path / "old")
    cfg_file = tmp_path / "old" / "segmentation.json"
    cfg = json.loads(cfg_file.read_text())
    for key in ("selector_layers", "max_candidates", "roi_size", "selector_weight", "selector_batch_size"):
        cfg.pop(key)
    cfg_file.write_text(json.dumps(cfg))
    loaded = SegmentationModel.from_pretrained(tmp_path / "old", device="cpu")
    assert loaded.selector is None
    image, _ = scene()
    assert np.array_equal(
        loaded.predict([image], ["RES"], ["red square"])[0], m.eval().predict([image], ["RES"], ["red square"])[0]
    )
