"""The flux_fill backend (FLUX.1-Fill-dev + one LoRA per brick) with tiny components built from config (CPU, seconds):
the ICEdit diptych layout and prompt, editing with paste-back, a LoRA training step, LoRA and model round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from lego_edit.models.flux_fill import (
    DIPTYCH_PREFIX,
    DIPTYCH_RIGHT,
    LORA_WEIGHTS,
    FluxFillConfig,
    FluxFillEditor,
    flux_prompt,
)

TEXTS = [
    "RCM: blue",
    "RCM: red striped",
    "ENV: make it night",
    "FILL: a red circle",
    "INPAINT: ",
    "CBG: change the background to a green background",
    "STYLE: a red circle on a white background | sketch style",
]


def _cfg(**kw) -> FluxFillConfig:
    return FluxFillConfig(resolution=32, num_inference_steps=2, max_sequence_length=128, dtype="float32", **kw)


def _box(shape, y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[y0:y1, x0:x1] = 255
    return m


@pytest.fixture(scope="module", autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)]
    masks = [_box((32, 32), 8, 20, 6, 22), _box((40, 24), 0, 12, 4, 24)]
    return images, masks


def _samples(rng, bricks=("RCM", "RCM", "FILL", "INPAINT")) -> list[dict]:
    out = []
    for brick in bricks:
        src = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        mask = _box((32, 32), 4, 16, 8, 24)
        tgt = np.where(mask[:, :, None] > 0, 255 - src, src).astype(np.uint8)
        s = {"brick": brick, "source": src, "mask": mask, "target": tgt, "prompt": "blue" if brick == "RCM" else ""}
        if brick == "INPAINT":
            s.update(preimage=src.copy(), score=0.8)
        out.append(s)
    return out


def _same(outs, refs) -> bool:
    return len(outs) == len(refs) and all(np.array_equal(a, b) for a, b in zip(outs, refs))


def test_prompts_follow_icedit():
    assert flux_prompt("ENV", "make it night") == (
        "A diptych with two side-by-side images of the same scene. "
        "On the right, the scene is exactly the same as on the left but make it night"
    )
    assert flux_prompt("RCM", "blue striped") == DIPTYCH_PREFIX + DIPTYCH_RIGHT + "the object is now blue striped"
    style = flux_prompt("STYLE", "a red circle on a white background", "sketch style")
    assert style == (
        DIPTYCH_PREFIX + "a red circle on a white background. " + DIPTYCH_RIGHT + "rendered in sketch style"
    )
    assert flux_prompt("FILL", "a red circle", mode="fill") == "a red circle"
    assert flux_prompt("CBG", "change the background to a green striped background", mode="fill") == (
        "a green striped background"
    )
    assert flux_prompt("INPAINT", "", mode="fill") == ""


def test_diptych_layout_is_icedit():
    ed = FluxFillEditor.build(_cfg(mask_dilation=0.0), TEXTS)
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    lay = ed.layout("ENV", img, None)
    assert lay.mode == "diptych" and lay.canvas.shape == (32, 64, 3) and lay.x0 == 32
    assert np.array_equal(lay.canvas[:, :32], img) and np.array_equal(lay.canvas[:, 32:], img)  # source | source
    assert not lay.mask[:, :32].any() and lay.mask[:, 32:].all()  # the right half
    mask = _box((32, 32), 8, 20, 6, 22)
    rcm = ed.layout("RCM", img, mask, target=255 - img)
    assert not rcm.mask[:, :32].any() and np.array_equal(rcm.mask[:, 32:], mask > 0)  # RCM: its mask, right
    assert np.array_equal(rcm.target[:, :32], img) and np.array_equal(rcm.target[:, 32:], 255 - img)
    fill = ed.layout("FILL", img, mask)
    assert fill.mode == "fill" and fill.canvas.shape == (32, 32, 3) and np.array_equal(fill.mask, mask > 0)
    assert ed.layout("CBG", img, mask).mode == "fill" and ed.layout("INPAINT", img, mask).mode == "fill"
    rgba = np.dstack([img, mask])
    ref = ed.layout("FILL", img, mask, preimage=rgba)
    assert ref.mode == "reference" and ref.canvas.shape == (32, 64, 3) and (ref.canvas[:, :32][mask == 0] == 255).all()
    assert FluxFillEditor.build(_cfg(diptych=False), TEXTS).layout("ENV", img, None).mode == "fill"
    # Working sizes keep the aspect and divide by 2 x the VAE factor; the dilation grows the model's mask only.
    assert ed.working_size(40, 24) == (40, 24) and ed.working_size(480, 640) == (28, 36)
    grown = FluxFillEditor.build(_cfg(mask_dilation=0.1), TEXTS).layout("RCM", img, mask).mask[:, 32:]
    assert grown.sum() > (mask > 0).sum() and grown[mask > 0].all()


def test_edit_pastes_back_and_is_deterministic(inputs):
    images, masks = inputs
    ed = FluxFillEditor.build(_cfg(), TEXTS)
    for brick in ("RCM", "FILL"):  # a diptych brick and a masked-fill brick
        out = ed.edit(brick, images, masks, ["blue", "a red circle"], seed=3)
        assert [o.shape for o in out] == [(32, 32, 3), (40, 24, 3)] and all(o.dtype == np.uint8 for o in out)
        for o, img, m in zip(out, images, masks):
            assert np.array_equal(o[m == 0], img[m == 0])
            assert not np.array_equal(o[m > 0], img[m > 0])
        again = ed.edit(brick, images, masks, ["blue", "a red circle"], seed=3)
        assert _same(out, again)
        other = ed.edit(brick, images, masks, ["blue", "a red circle"], seed=4)
        assert not np.array_equal(out[0], other[0])
    whole = ed.edit("ENV", images, [None, None], ["make it night", "add fog"], seed=0)
    assert [o.shape for o in whole] == [(32, 32, 3), (40, 24, 3)]
    assert _same(ed.edit("ENV", images, None, ["make it night", "add fog"]), whole)
    inpainted = ed.edit("INPAINT", images, masks, ["", ""], preimages=[255 - images[0], None], strengths=[0.5, 0.7])
    assert all(np.array_equal(o[m == 0], img[m == 0]) for o, img, m in zip(inpainted, images, masks))


def test_lora_training_adapters_and_round_trips(tmp_path, inputs):
    images, masks = inputs
    ed = FluxFillEditor.build(_cfg(), TEXTS)
    ed.save_pretrained(tmp_path / "base")
    assert not (tmp_path / "base" / "loras").exists()
    base_rcm = ed.edit("RCM", images, masks, ["blue", "red"], seed=1)

    # One LoRA step: the loss is finite and only the new adapter's weights move.
    data = ed.training_data(_samples(np.random.default_rng(2)))
    assert data["size"] == 4 and data["prompts"][0].startswith(DIPTYCH_PREFIX) and data["prompts"][2] == ""
    ed.add_lora("RCM", rank=4)
    trainable = {n for n, p in ed.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and ".RCM." in n for n in trainable)
    before = {n: p.detach().clone() for n, p in ed.named_parameters()}
    ed.train()
    opt = torch.optim.AdamW([p for p in ed.parameters() if p.requires_grad], lr=1e-2)
    loss = ed.training_loss(data, torch.tensor([0, 2, 3, 1]), torch.Generator().manual_seed(0))  # both layouts
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    opt.step()
    changed = {n for n, p in ed.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= trainable
    trained_rcm = ed.edit("RCM", images, masks, ["blue", "red"], seed=1)
    assert not _same(trained_rcm, base_rcm)

    # save_lora writes the pipeline format; a fresh editor from the saved base + load_lora reproduces the edit.
    ed.save_lora("RCM", tmp_path / "rcm")
    with safe_open(str(tmp_path / "rcm" / LORA_WEIGHTS), "pt") as f:
        assert f.keys() and all(k.startswith("transformer.") for k in f.keys())
    fresh = FluxFillEditor.from_pretrained(tmp_path / "base", device="cpu")
    assert _same(fresh.edit("RCM", images, masks, ["blue", "red"], seed=1), base_rcm)
    fresh.load_lora("RCM", tmp_path / "rcm")
    assert _same(fresh.edit("RCM", images, masks, ["blue", "red"], seed=1), trained_rcm)

    # A second adapter; set_brick switches, and a brick without one runs the base.
    base_fill = ed.edit("FILL", images, masks, ["a red circle"] * 2, seed=5)
    ed.add_lora("ENV", rank=4)
    with torch.no_grad():
        for n, p in ed.named_parameters():
            if "lora_B" in n and ".ENV." in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(9))
    env = ed.edit("ENV", images, None, ["make it night"] * 2, seed=1)
    ed.set_brick("RCM")
    assert ed.transformer.active_adapters() == ["RCM"]
    assert _same(ed.edit("RCM", images, masks, ["blue", "red"], seed=1), trained_rcm)
    ed.set_brick("FILL")
    assert _same(ed.edit("FILL", images, masks, ["a red circle"] * 2, seed=5), base_fill)
    env_as_base = FluxFillEditor.from_pretrained(tmp_path / "base", device="cpu").edit(
        "ENV", images, None, ["make it night"] * 2, seed=1
    )
    assert not _same(env, env_as_base)

    # save_pretrained / from_pretrained keeps the base and both adapters.
    ed.save_pretrained(tmp_path / "full")
    meta = json.loads((tmp_path / "full" / "edit_model.json").read_text())
    assert meta["backend"] == "flux_fill" and sorted(meta["adapters"]) == ["ENV", "RCM"]
    back = FluxFillEditor.from_pretrained(tmp_path / "full", device="cpu")
    assert _same(back.edit("ENV", images, None, ["make it night"] * 2, seed=1), env)
    assert _same(back.edit("RCM", images, masks, ["blue", "red"], seed=1), trained_rcm)
    assert _same(back.edit("FILL", images, masks, ["a red circle"] * 2, seed=5), base_fill)


def test_pretrained_base_is_a_pointer(tmp_path, inputs):
    """A pretrained base (here a tiny FluxFillPipeline folder standing in for FLUX.1-Fill-dev) loads through
    FluxFillPipeline.from_pretrained, stays frozen, and save_pretrained writes a pointer, not a copy."""
    images, masks = inputs
    FluxFillEditor.build(_cfg(), TEXTS).pipe.save_pretrained(tmp_path / "hub", safe_serialization=True)
    ed = FluxFillEditor.build(_cfg(pretrained=str(tmp_path / "hub")), [])
    assert not any(p.requires_grad for p in ed.parameters())
    out = ed.edit("POSE", images, None, ["make the triangle point up"] * 2, seed=2)
    ed.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["edit_model.json"]
    back = FluxFillEditor.from_pretrained(tmp_path / "model", device="cpu")
    assert _same(back.edit("POSE", images, None, ["make the triangle point up"] * 2, seed=2), out)


def test_training_reads_its_batches_from_the_shards_with_the_same_loss(tmp_path):
    """A paper-scale edit set stays on disk: training_data reads only fields and image shapes from a ShardSamples,
    and the batch's loss equals the loss on the decoded samples."""
    from lego_edit.data.shard_index import ShardSamples
    from lego_edit.data.shards import write_shard_set

    samples = _samples(np.random.default_rng(3), ("RCM", "FILL", "INPAINT", "FILL"))
    samples[3]["preimage"] = np.random.default_rng(4).integers(0, 256, (10, 12, 4), dtype=np.uint8)  # a cut-out
    images = ("source", "mask", "target", "preimage")
    rows = [
        (f"e_{i}", {k: s[k] for k in images if k in s}, {k: v for k, v in s.items() if k not in images})
        for i, s in enumerate(samples)
    ]
    write_shard_set({"train": rows}, "edit", tmp_path, samples_per_shard=3)
    on_disk = ShardSamples(tmp_path, "train")
    ed = FluxFillEditor.build(_cfg(), TEXTS)
    held, read = ed.training_data(samples), ed.training_data(on_disk)
    assert read["prompts"] == held["prompts"] and read["brick"] == held["brick"] and read["size"] == 4
    assert ed.mode("FILL", samples[3]["preimage"]) == "reference" and read["prompts"][3] == held["prompts"][3]
    index, losses = torch.tensor([3, 0, 2, 1]), []
    for data in (held, read):
        torch.manual_seed(0)  # the tiny pipeline also draws from the global generator
        with torch.no_grad():
            losses.append(ed.training_loss(data, index, torch.Generator().manual_seed(0)))
    assert torch.equal(*losses)
