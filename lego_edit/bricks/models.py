"""Model-backed bricks: bind trained models to the registry so that the executor runs real models.

``bind_model_bricks(registry, run_dir)`` looks for a pipeline run's trained models (``<run_dir>/bricks/...``
and the base VLM under ``<run_dir>/builder/base``) and binds every brick whose model exists. Models load
lazily, once per process, on the best device (cuda if available); calls are batched inside a brick where the
brick allows it (all crop windows of an edit go through the diffusion model together).
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import numpy as np

from ..workflow.errors import ExecutionError
from ..workflow.values import as_mask
from .functions import expand_canvas, mask_bbox, object_region, turn_object
from .registry import BrickRegistry
from .vlm_prompts import CAPTION_PROMPT, PLACEMENT_PROMPT, parse_box

log = logging.getLogger(__name__)
EDIT_BRICK_NAMES = ("FILL", "RCM", "INPAINT", "CBG", "STYLE", "ENV", "POSE")


def inpaint_strength(score: float) -> float:
    """FASTINPAINT's difficulty score (0 easy .. 1 hard) as INPAINT's denoising strength: an easy hole keeps
    most of the classical fill, a hard one is regenerated. The published brick maps it to 0.7-1.0 over a LaMa
    fill; here the classical fill of a flat background is already close, and measured on the shapes world the
    small UNet loses detail at high strength (held-out PSNR 29.0 dB at 0.2, 25.7 dB at 0.6), so the floor is
    lower."""
    return 0.2 + 0.8 * float(np.clip(score, 0.0, 1.0))


_POSE_TAIL = re.compile(r"\s+(?:(?:so|such)\s+(?:that\s+)?(?:it|they)\s+|to\s+|and\s+|(?:should|must|will|would)\s+)?"
                        r"(?:point|points|pointing|face|faces|facing|turn|turns|turned|rotate|rotated)\b.*$",
                        re.IGNORECASE)
_POSE_HEAD = re.compile(r"^(?:please\s+)?(?:(?:make|rotate|turn|have|get|let|can)\s+)?(?:(?:the|a|an)\s+)?",
                        re.IGNORECASE)  # RES is trained on bare expressions ("red triangle")


_DIRECTION = re.compile(r"\b(up|down|left|right)(?:wards?)?\b", re.IGNORECASE)


def pose_direction(prompt: str) -> str | None:
    """The way a POSE prompt asks the object to point (its last up/down/left/right word), or None."""
    found = _DIRECTION.findall(prompt)
    return found[-1].lower() if found else None


def pose_subject(prompt: str) -> str | None:
    """The object a POSE prompt names: 'make the red triangle point left' -> 'red triangle'; None when the
    prompt names none (then POSE edits the whole image)."""
    text = _POSE_TAIL.sub("", _POSE_HEAD.sub("", prompt.strip().rstrip(".?!"))).strip()
    return None if not text or text.lower() in ("it", "them", "this", "that", "everything") else text


# POSE starts from the geometrically turned object and the model redraws what turning got wrong. Measured on the
# shapes world (held-out PSNR in the object's box; copy 12.9, the turn alone 33.6): 0.05 -> 26.5, 0.1 -> 23.8,
# 0.3 -> 20.1 dB. The small UNet's velocity is least accurate near sigma 0, so it starts late; a larger base (flux)
# can take more.
POSE_STRENGTH = 0.05


# Bricks whose sampler starts from a preimage: INPAINT's classical fill, POSE's turned object. (FILL's preimage,
# the image before outpainting, only means something to flux_fill; the unet canvas already carries it.)
PREIMAGE_BRICKS = ("INPAINT", "POSE")


def start_strength(brick: str, preimage, score: float | None = None) -> float | None:
    """Where an edit brick's sampler starts (None: from pure noise): INPAINT from FASTINPAINT's fill at the
    strength its score asks, POSE from the turned object at POSE_STRENGTH."""
    if brick == "INPAINT" and score is not None:
        return inpaint_strength(score)
    if brick == "POSE" and preimage is not None:
        return POSE_STRENGTH
    return None


def load_edit_model(path: str | Path, device: str | None = None):
    """The edit base saved by training, whichever backend wrote it."""
    meta = json.loads((Path(path) / "edit_model.json").read_text())
    if meta.get("backend", "unet") == "flux_fill":
        from ..models.flux_fill import FluxFillEditor

        return FluxFillEditor.from_pretrained(path, device=device)
    from ..models.inpainting import UNetInpainter

    return UNetInpainter.from_pretrained(path, device=device)


class ModelStore:
    """Loads each model on first use and keeps it for the life of the process."""

    def __init__(self, run_dir: str | Path, device: str | None = None):
        self.run_dir = Path(run_dir)
        self.device = device
        self._lock = threading.Lock()
        self.edit_lock = threading.Lock()
        self._cache: dict[str, object] = {}

    def path(self, *parts: str) -> Path:
        return self.run_dir.joinpath(*parts)

    def _get(self, key: str, load):
        with self._lock:
            if key not in self._cache:
                log.info("loading %s", key)
                self._cache[key] = load()
            return self._cache[key]

    def segmentation(self):
        from ..models.segmentation import SegmentationModel

        return self._get("segmentation", lambda: SegmentationModel.from_pretrained(
            self.path("bricks", "segmentation"), device=self.device))

    def vlm_bricks(self):
        """The base VLM with the ADD-PRED and CMI-PRED adapters, switched per call."""
        def load():
            from peft import PeftModel

            from ..models.vlm import load_vlm
            from ..training.vlm_sft import resolve_base

            model, processor = load_vlm(resolve_base(self.path("builder", "base")), device=self.device)
            names = [n for n in ("placement", "captioning")
                     if (self.path("bricks", n) / "adapter_config.json").is_file()]
            model = PeftModel.from_pretrained(model, str(self.path("bricks", names[0])), adapter_name=names[0])
            for n in names[1:]:
                model.load_adapter(str(self.path("bricks", n)), adapter_name=n)
            return model.eval(), processor

        return self._get("vlm_bricks", load)

    def edit_model(self):
        def load():
            model = load_edit_model(self.path("bricks", "edit_base"), device=self.device)
            lora_dir = self.path("bricks", "edit_lora")
            for brick in EDIT_BRICK_NAMES:
                if (lora_dir / brick / "pytorch_lora_weights.safetensors").is_file():
                    model.load_lora(brick, lora_dir / brick)
            return model

        return self._get("edit_model", load)


def _vlm_answer(store: ModelStore, adapter: str, image: np.ndarray, text: str, max_new_tokens: int) -> str:
    from ..models.vlm import chat, generate

    model, processor = store.vlm_bricks()
    model.set_adapter(adapter)
    return generate(model, processor, [chat(text, 1)], [[image[:, :, :3]]], max_new_tokens=max_new_tokens)[0]


def _cutout(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.dstack([image[:, :, :3], mask])


def make_implementations(store: ModelStore) -> dict:
    def segment(task, image, prompt="", hint=None):
        mask = store.segmentation().predict([image], [task], [prompt], None if hint is None else [as_mask(hint)])[0]
        return {"mask": mask, "image": _cutout(image, mask)}

    def res(ctx, image, prompt):
        return segment("RES", image, prompt)

    def sos(ctx, image):
        return segment("SOS", image)

    def mask_seg(ctx, image, mask):
        return segment("MASK-SEG", image, "", mask)

    def add_pred(ctx, image, prompt, mask=None):
        H, W = image.shape[:2]
        answer = _vlm_answer(store, "placement", image, PLACEMENT_PROMPT.format(prompt=prompt), 32)
        box = parse_box(answer, W, H)
        if box is None:
            raise ExecutionError(f"ADD-PRED answered {answer[:80]!r}, not a box [x1, y1, x2, y2]")
        x1, y1, x2, y2 = box
        if mask is not None:  # the place must lie inside the user's mask: keep the size, move it in
            region = mask_bbox(as_mask(mask) > 0)
            if region is not None:
                rx, ry, rw, rh = region
                w, h = min(x2 - x1 + 1, rw), min(y2 - y1 + 1, rh)
                x1 = min(max(x1, rx), rx + rw - w)
                y1 = min(max(y1, ry), ry + rh - h)
                x2, y2 = x1 + w - 1, y1 + h - 1
        out = np.zeros((H, W), dtype=np.uint8)
        out[y1:y2 + 1, x1:x2 + 1] = 255
        return {"mask": out}

    def cmi_pred(ctx, image, left_ratio=None, right_ratio=None, top_ratio=None, bottom_ratio=None):
        caption = _vlm_answer(store, "captioning", image, CAPTION_PROMPT, 96).strip()
        if left_ratio is None:
            return {"caption": caption}
        canvas, mask = expand_canvas(ctx, image, left_ratio, right_ratio, top_ratio, bottom_ratio)
        return {"caption": caption, "image": canvas, "mask": mask}

    def pose_start(image, mask, prompt):
        """POSE's prompt names an object and a way to point: find the object (RES), turn it, and edit its box
        only (the rest stays exact). Without a segmentation model or a named object: the whole image."""
        subject = pose_subject(prompt)
        if subject is None or not store.path("bricks", "segmentation", "segmentation.json").is_file():
            return mask, None
        found = segment("RES", image, subject)["mask"]
        direction = pose_direction(prompt)
        turned = turn_object(image, found, direction) if direction else None
        return (object_region(found) if mask is None else mask), turned

    def editor(brick):
        def run(ctx, image, mask=None, prompt="", preimage=None, score=None, style=None):
            model = store.edit_model()
            if brick == "POSE":
                mask, preimage = pose_start(image, mask, prompt or "")
            pre = preimage if brick in PREIMAGE_BRICKS or (brick == "FILL" and model.backend == "flux_fill") else None
            strength = start_strength(brick, pre, score)
            with store.edit_lock:  # edit() switches adapters and scheduler state: one call at a time
                out = model.edit(brick, [image[:, :, :3]], [None if mask is None else as_mask(mask)],
                                 [prompt or ""], preimages=[pre], strengths=[strength], styles=[style],
                                 seed=getattr(ctx, "seed", 0))
            return {"image": out[0]}

        return run

    impls = {"RES": res, "SOS": sos, "MASK-SEG": mask_seg, "ADD-PRED": add_pred, "CMI-PRED": cmi_pred}
    impls.update({b: editor(b) for b in EDIT_BRICK_NAMES})
    return impls


def available_models(run_dir: str | Path) -> dict[str, bool]:
    run = Path(run_dir)
    seg = (run / "bricks" / "segmentation" / "segmentation.json").is_file()
    edit = (run / "bricks" / "edit_base" / "edit_model.json").is_file()
    base = (run / "builder" / "base").is_dir()
    out = {name: seg for name in ("RES", "SOS", "MASK-SEG")}
    out["ADD-PRED"] = base and (run / "bricks" / "placement" / "adapter_config.json").is_file()
    out["CMI-PRED"] = base and (run / "bricks" / "captioning" / "adapter_config.json").is_file()
    out.update({b: edit for b in EDIT_BRICK_NAMES})
    return out


def bind_model_bricks(registry: BrickRegistry, run_dir: str | Path, device: str | None = None) -> list[str]:
    """Bind every model-backed brick whose trained model exists under ``run_dir``; returns the bound names."""
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder (expected a pipeline's results/ folder)")
    store = ModelStore(run, device)
    impls = make_implementations(store)
    bound = []
    for name, ok in available_models(run).items():
        if ok and name in registry:
            registry.bind(name, impls[name], source=f"trained model in {run}")
            bound.append(name)
    if not bound:
        raise FileNotFoundError(f"{run_dir}: no trained brick models found under bricks/")
    return bound
