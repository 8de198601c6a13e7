"""Shared fixtures for the foundation tests (workflow language, bricks, imageio, CLI)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from judge_fixtures import checkouts, served_judge  # noqa: F401 - one judge server for the judge tests
from pipeline_fixtures import pipeline_run  # noqa: F401 - the whole-DAG run, shared by the pipeline tests
from teacher_fixtures import served_teacher, served_teacher_judge  # noqa: F401 - the teacher VLM of the builder-sources chain

from lego_edit.bricks.registry import default_registry
from lego_edit.workflow.values import Kind

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def registry():
    """A fresh registry with the built-in bricks only (no entry-point plugins), safe to modify."""
    return default_registry(plugins=False)


@pytest.fixture(scope="session")
def published_dir() -> Path:
    """The published release's four worked examples, verbatim (see fixtures/published/README.md)."""
    return FIXTURES / "published"


def _rect(x, y, w, h, size=16):
    m = np.zeros((size, size), np.uint8)
    m[y : y + h, x : x + w] = 255
    return m


@pytest.fixture(scope="session")
def function_case():
    """fixtures/workflows/function_bricks.json, its 16x16 inputs and its outputs worked out by hand."""
    y, x = np.mgrid[0:16, 0:16]
    image = np.dstack([30 * (x // 2), 30 * (y // 2), np.full_like(x, 200)]).astype(np.uint8)  # constant 2x2 blocks
    user_mask = np.maximum(_rect(4, 6, 2, 8), _rect(4, 12, 8, 2))  # an L: x 4..11, y 6..13
    box = _rect(4, 6, 8, 8)  # step 1, BBOX
    small = _rect(6, 10, 4, 4)  # step 2, 8x8 * 0.5 at x=4+2, y=6+8-4
    ring = np.where((box > 0) & (small == 0), 255, 0).astype(np.uint8)  # step 3, box - small
    ring_l = np.maximum(ring, user_mask)  # step 4: box minus (x 6..9, y 10..11)
    assert np.array_equal(ring_l, np.where(_rect(6, 10, 4, 2) > 0, 0, box))
    zoomed = np.zeros_like(image)
    zoomed[4:12, 4:12] = image[::2, ::2]  # step 6: half size, centred, black around
    diff = np.clip(image.astype(int) - zoomed, 0, 255).astype(np.uint8)  # step 7, saturating
    return SimpleNamespace(
        workflow=FIXTURES / "workflows" / "function_bricks.json",
        image=image,
        mask=user_mask,
        masks={"step1[mask]": box, "step2[mask]": small, "step3[mask]": ring, "step4[mask]": ring_l},
        images={"step6[image]": zoomed, "step7[image]": diff, "step8[image]": zoomed},
        inpaint_region=_rect(3, 5, 10, 10),  # step 4's mask dilated once by 3x3: FASTINPAINT may change only this
        hole_pixels=56,
    )


def _fake_outputs(spec, inputs) -> dict:
    """Outputs of the declared kinds, sized like the first image or mask input."""
    shape = next((v.shape[:2] for v in inputs.values() if isinstance(v, np.ndarray)), (8, 8))
    out = {}
    for port in spec.outputs:
        if port.kind is Kind.IMAGE:
            out[port.name] = np.zeros((*shape, 3), np.uint8)
        elif port.kind is Kind.MASK:
            out[port.name] = np.zeros(shape, np.uint8)
        elif port.kind is Kind.STR:
            out[port.name] = f"a {spec.name.lower()} caption"
        else:
            out[port.name] = port.range[0] if port.range else 0.5
    return out


@pytest.fixture(scope="session")
def recording_registry():
    """Factory: (registry, calls). Every brick records its canonical name in ``calls`` when run; model bricks
    are bound to fakes that return blank outputs of the declared kinds; ``impls`` overrides any brick."""

    def make(impls: dict | None = None):
        reg = default_registry(plugins=False)
        calls: list[str] = []
        for spec in list(reg):
            inner = (impls or {}).get(spec.name) or reg.implementation(spec.name)

            def run(ctx, _spec=spec, _inner=inner, **inputs):
                calls.append(_spec.name)
                return _inner(ctx, **inputs) if _inner else _fake_outputs(_spec, inputs)

            reg.bind(spec.name, run, source="test recording")
        return reg, calls

    return make
