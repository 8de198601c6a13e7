"""The unet edit backend (lego_edit.models.inpainting): parameterisations, box coordinates, per-item noise, and
the brick-balanced training sampler, on a tiny model built from config (CPU, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lego_edit.models.conditional_unet import UNetConfig
from lego_edit.models.inpainting import EditModelConfig, UNetInpainter, box_channels
from lego_edit.models.text_encoder import TextEncoderConfig
from lego_edit.training.edit_bricks import BalancedSampler

TEXTS = ["RCM: blue", "POSE: make the red triangle point left", "FILL: red circle", "INPAINT: "]


def tiny(prediction="residual", box_coords=True, erase_under_mask=()) -> UNetInpainter:
    cfg = EditModelConfig(
        crop_size=16,
        text=TextEncoderConfig(
            hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_length=12, vocab_size=300
        ),
        unet=UNetConfig(block_out_channels=[8, 16], attention_levels=1, norm_num_groups=4),
        sampling_steps=2,
        prediction=prediction,
        box_coords=box_coords,
        erase_under_mask=list(erase_under_mask),
    )
    torch.manual_seed(0)
    return UNetInpainter.build(cfg, TEXTS)


def scene():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    mask = np.zeros((24, 24), np.uint8)
    mask[6:14, 8:20] = 255
    return image, mask


def test_box_channels_span_the_mask_box():
    _, mask = scene()
    planes = box_channels(mask, 0, 0, 24, 24)
    x, y = planes
    # the box is columns 8..19 and rows 6..13: -1 just inside its left / top edge, +1 at its right / bottom edge
    assert x[0, 8] == pytest.approx(-1 + 1 / 12) and x[0, 19] == pytest.approx(1 - 1 / 12)
    assert y[6, 0] == pytest.approx(-1 + 1 / 8) and y[13, 0] == pytest.approx(1 - 1 / 8)
    assert torch.equal(box_channels(np.zeros((4, 4), np.uint8), 0, 0, 4, 4), torch.zeros(2, 4, 4))


def test_a_residual_model_that_changes_nothing_keeps_the_start_it_refines():
    model = tiny("residual")
    torch.nn.init.zeros_(model.unet.conv_out.weight)
    torch.nn.init.zeros_(model.unet.conv_out.bias)
    image, mask = scene()
    start = (image // 2).astype(np.uint8)  # a refining brick's preimage
    out = model.edit(
        "POSE", [image], [mask], ["make the red triangle point left"], preimages=[start], strengths=[0.05]
    )[0]
    inside = mask > 0
    assert np.abs(out[inside].astype(int) - start[inside].astype(int)).max() <= 1
    assert np.array_equal(out[~inside], image[~inside])


@pytest.mark.parametrize("prediction", ["velocity", "sample", "residual"])
def test_every_parameterisation_trains_and_lowers_its_loss(prediction):
    model = tiny(prediction)
    image, mask = scene()
    target = image.copy()
    target[mask > 0] = (20, 40, 200)
    samples = [{"brick": "RCM", "prompt": "blue", "source": image, "mask": mask, "target": target}] * 4
    data = model.training_data(samples)
    assert data["coords"].shape[1] == 4 and data["brick"] == ["RCM"] * data["size"]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(data["size"])
    first = model.training_loss(data, idx, torch.Generator().manual_seed(1)).item()
    for _ in range(60):
        opt.zero_grad()
        model.training_loss(data, idx, gen).backward()
        opt.step()
    assert model.training_loss(data, idx, torch.Generator().manual_seed(1)).item() < first / 2


def test_fill_never_sees_what_its_mask_covers():
    """FILL replacing an object must not copy the old object: what lies inside its mask is filled from the
    surroundings before the model sees it, in training and in editing; other bricks see their source as it is."""
    model = tiny("residual", erase_under_mask=["FILL"])
    image, mask = scene()
    other = image.copy()
    other[mask > 0] = (255, 0, 255)  # a different object under the same mask
    sources = [model.model_source("FILL", x, mask) for x in (image, other)]
    assert np.array_equal(sources[0], sources[1])
    assert np.array_equal(model.model_source("RCM", other, mask), other)
    target = image.copy()
    data = model.training_data(
        [{"brick": "FILL", "prompt": "red circle", "source": x, "mask": mask, "target": target} for x in (image, other)]
    )
    assert torch.equal(data["source"][0], data["source"][1])
    torch.nn.init.zeros_(model.unet.conv_out.weight)  # a residual of zero returns the model's source
    torch.nn.init.zeros_(model.unet.conv_out.bias)
    outs = model.edit("FILL", [image, other], [mask, mask], ["red circle"] * 2, seeds=[1, 1])
    assert np.abs(outs[0].astype(int) - outs[1].astype(int)).max() <= 1
    assert np.array_equal(outs[1][mask == 0], other[mask == 0])


def test_an_item_edited_in_a_batch_gets_what_it_gets_alone():
    model = tiny("sample")
    image, mask = scene()
    other = np.roll(image, 5, axis=1)
    batch = model.edit("RCM", [other, image], [mask, mask], ["blue", "blue"], seeds=[11, 7])
    alone = model.edit("RCM", [image], [mask], ["blue"], seeds=[7])
    assert np.abs(batch[1].astype(int) - alone[0].astype(int)).max() <= 1


def test_merged_lora_copies_edit_as_the_adapters_do():
    model = tiny()
    for brick in ("RCM", "FILL"):
        model.add_lora(brick, rank=4)
        torch.manual_seed(len(brick))
        for name, p in model.unet.named_parameters():
            if "lora_B" in name and f".{brick}." in name:  # a trained LoRA: B is not zero
                torch.nn.init.normal_(p, std=0.3)
    image, mask = scene()
    args = ([image, np.roll(image, 3, axis=0)], [mask, mask], ["blue", "red circle"])
    before = {b: model.edit(b, *args, seeds=[3, 4]) for b in ("RCM", "FILL", "INPAINT")}
    assert np.abs(before["RCM"][0].astype(int) - before["FILL"][0].astype(int)).max() > 10  # the LoRAs differ
    saved = model.state_dict().keys()
    model.merge_loras_for_inference()
    assert sorted(model._plain_unets) == ["", "FILL", "RCM"]
    assert model.state_dict().keys() == saved  # the merged copies are not part of the model
    for brick, outs in before.items():  # INPAINT has no LoRA: the base without adapter layers
        after = model.edit(brick, *args, seeds=[3, 4])
        for a, b in zip(outs, after):
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1, brick


def test_balanced_sampler_draws_each_brick_equally_often():
    bricks = ["STYLE"] * 90 + ["RCM"] * 9 + ["POSE"] * 1
    sampler = BalancedSampler(bricks)
    idx = sampler(3000, torch.Generator().manual_seed(0))
    drawn = [bricks[i] for i in idx.tolist()]
    for name in ("STYLE", "RCM", "POSE"):
        assert 850 < drawn.count(name) < 1150


def test_start_gain_keeps_a_refining_brick_at_or_above_its_start(tmp_path):
    """An untrained model's change to a POSE start is noise: the fitted gain drops it (gain 0), the brick then
    returns its start, and the gain travels with the saved model."""
    from lego_edit.bricks.models import load_edit_model
    from lego_edit.training.edit_bricks import calibrate_start_gain

    model = tiny("residual")
    image, mask = scene()
    start = image.copy()
    start[mask > 0] = 200
    sample = {
        "brick": "POSE",
        "prompt": "make the red triangle point left",
        "source": image,
        "mask": mask,
        "target": start,
        "preimage": start,
    }
    assert calibrate_start_gain(model, [sample] * 3, ["POSE"], 3, seed=0) == {"POSE": 0.0}
    out = model.edit("POSE", [image], [mask], [sample["prompt"]], preimages=[start], strengths=[0.05])[0]
    assert np.array_equal(out, start)
    model.save_pretrained(tmp_path / "m")
    assert load_edit_model(tmp_path / "m", device="cpu").start_gain == {"POSE": 0.0}


class _Refiner:
    """A refining brick whose change to its start is fixed per sample: what calibrate_start_gain weighs."""

    def __init__(self, outputs):
        self.outputs, self.start_gain = outputs, {}

    def edit(self, brick, sources, masks, prompts, **kwargs):
        return self.outputs


def test_start_gain_needs_a_clear_paired_gain_over_the_start():
    from lego_edit.training.edit_bricks import calibrate_start_gain

    rng = np.random.default_rng(0)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 1
    targets = [rng.integers(0, 256, (16, 16, 3)).astype(np.uint8) for _ in range(6)]
    starts = [np.clip(t.astype(int) + 30, 0, 255).astype(np.uint8) for t in targets]
    rows = [
        {"brick": "INPAINT", "source": s, "mask": mask, "target": t, "preimage": s} for s, t in zip(starts, targets)
    ]
    # The change lands on the target on every sample: a clear gain, kept in full.
    assert calibrate_start_gain(_Refiner(targets), rows, ["INPAINT"], 6, seed=0) == {"INPAINT": 1.0}
    # The change hits the target on one sample and hurts the other five: the best mean (g = 1, +1.1 dB) rests on
    # one sample, not clear of noise, so the start is kept.
    mixed = [targets[0]] + [np.clip(s.astype(int) + 40, 0, 255).astype(np.uint8) for s in starts[1:]]
    assert calibrate_start_gain(_Refiner(mixed), rows, ["INPAINT"], 6, seed=0) == {"INPAINT": 0.0}


def test_a_saved_lora_has_the_same_bytes_whatever_the_hash_seed(tmp_path):
    """diffusers writes the adapter's target_modules in set order, which follows PYTHONHASHSEED; the saved files
    are made canonical, so two runs of one config give byte-identical adapters."""
    import hashlib
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_edit_model import tiny\n"
        "m = tiny(); m.add_lora('RCM', 4); m.save_lora('RCM', sys.argv[1])\n"
    )
    digests = []
    for seed in ("1", "2", "3"):
        out = tmp_path / seed
        subprocess.run([sys.executable, "-c", script, str(out)], check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        digests.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())})
    assert digests[0] == digests[1] == digests[2] and digests[0]
    model = tiny()
    model.load_lora("RCM", tmp_path / "1")  # the rewritten file is still a valid adapter
    assert "RCM" in model.unet.peft_config
