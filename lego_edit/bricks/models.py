"""Model-backed bricks: bind trained models to the registry so that the executor runs real models.

``bind_model_bricks(registry, models)`` binds every brick whose trained model exists: ``models`` names each model
folder (``layout.BrickModels``: a rule's named inputs) or is a pipeline run's results folder (``layout.RunLayout``
says where a run keeps them). Models load
lazily, once per process, on the best device (cuda if available); calls are batched inside a brick where the
brick allows it (all crop windows of an edit go through the diffusion model together).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..layout import BRICK_MODELS, EDIT_BRICK_NAMES, VLM_BRICK_MODELS, BrickModels
from ..workflow.errors import ExecutionError
from ..workflow.values import as_mask
from .edit_starts import (  # noqa: F401 - also re-exported: this module was their import path
    POSE_STRENGTH,
    PREIMAGE_BRICKS,
    inpaint_strength,
    pose_direction,
    pose_subject,
    start_strength,
)
from .functions import expand_canvas, mask_bbox, object_region, turn_object
from .registry import BrickRegistry
from .vlm_prompts import CAPTION_PROMPT, PLACEMENT_PROMPT, parse_box

log = logging.getLogger(__name__)


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

    def __init__(self, models: BrickModels, device: str | None = None):
        self.models = models
        self.device = device
        self._lock = threading.Lock()
        self.edit_lock = threading.Lock()
        self._cache: dict[str, object] = {}

    def _get(self, key: str, load):
        with self._lock:
            if key not in self._cache:
                log.info("loading %s", key)
                self._cache[key] = load()
            return self._cache[key]

    def segmentation(self):
        from ..models.segmentation import SegmentationModel

        return self._get(
            "segmentation",
            lambda: SegmentationModel.from_pretrained(self.models.segmentation, device=self.device),
        )

    def vlm_bricks(self):
        """The base VLM with the ADD-PRED and CMI-PRED adapters, switched per call."""

        def load():
            from peft import PeftModel

            from ..models.vlm import load_vlm
            from ..training.vlm_sft import resolve_base

            model, processor = load_vlm(resolve_base(Path(self.models.base_vlm)), device=self.device)
            adapters = {n: getattr(self.models, n) for n in VLM_BRICK_MODELS if has_adapter(getattr(self.models, n))}
            names = list(adapters)
            model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
            for n in names[1:]:
                model.load_adapter(str(adapters[n]), adapter_name=n)
            return model.eval(), processor

        return self._get("vlm_bricks", load)

    def edit_model(self):
        def load():
            model = load_edit_model(self.models.edit_base, device=self.device)
            loras = self.models.lora_folders()
            for brick in EDIT_BRICK_NAMES:
                if brick in loras and (loras[brick] / "pytorch_lora_weights.safetensors").is_file():
                    model.load_lora(brick, loras[brick])
            if hasattr(model, "merge_loras_for_inference"):
                model.merge_loras_for_inference()  # the store only edits: plain UNets, no adapter layers
            return model

        return self._get("edit_model", load)


def _cutout(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.dstack([image[:, :, :3], mask])


def _guarded(fn, items: list) -> list:
    """``fn(item)`` for each item, with the exception in place of an item that failed: one bad call of a batch
    fails only itself. A TimeoutError (the caller's bound on the whole batch) goes through."""
    out = []
    for item in items:
        try:
            out.append(fn(item))
        except TimeoutError:
            raise
        except Exception as e:
            out.append(e)
    return out


def _run_prepared(calls: list[dict], prepare, run_many) -> list:
    """Prepare each call, run the prepared ones together (``run_many(list of prepared) -> outputs``), and return
    per-call outputs, with the exception in place of a call whose preparation failed."""
    results = _guarded(prepare, calls)
    ok = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    if ok:
        for i, out in zip(ok, run_many([results[i] for i in ok])):
            results[i] = out
    return results


def _one(results: list):
    """The single result of a one-call batch, raised if it is the call's exception."""
    if isinstance(results[0], BaseException):
        raise results[0]
    return results[0]


def make_implementations(store: ModelStore) -> dict:
    """Each model brick as ``fn(ctx, **inputs)``, with ``fn.batch(ctx, calls)`` running a list of calls through the
    model in one pass (``Executor.run_batch``); a call gets the same output either way."""

    def segment_many(task, images, prompts, hints=None):
        masks = store.segmentation().predict(images, [task] * len(images), prompts, hints)
        return [{"mask": m, "image": _cutout(im, m)} for im, m in zip(images, masks)]

    def segmenter(task):
        def prepare(call):
            hint = call.get("mask")
            return call["image"], call.get("prompt", ""), None if hint is None else as_mask(hint)

        def run(ctx, image, prompt="", mask=None):
            return _one(batch(ctx, [{"image": image, "prompt": prompt, "mask": mask}]))

        def run_many(prepared):
            images, prompts, hints = (list(v) for v in zip(*prepared))
            return segment_many(task, images, prompts, hints if task == "MASK-SEG" else None)

        def batch(ctx, calls):
            return _run_prepared(calls, prepare, run_many)

        run.batch = batch
        return run

    def segment(task, image, prompt="", hint=None):
        return segment_many(task, [image], [prompt], None if hint is None else [as_mask(hint)])[0]

    def vlm_answers(adapter, images, texts, max_new_tokens):
        from ..models.vlm import chat, generate

        model, processor = store.vlm_bricks()
        model.set_adapter(adapter)
        return generate(
            model,
            processor,
            [chat(t, 1) for t in texts],
            [[im[:, :, :3]] for im in images],
            max_new_tokens=max_new_tokens,
        )

    def placed(image, answer, mask=None):
        H, W = image.shape[:2]
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
        out[y1 : y2 + 1, x1 : x2 + 1] = 255
        return {"mask": out}

    def add_pred_batch(ctx, calls):
        answers = vlm_answers(
            "placement", [c["image"] for c in calls], [PLACEMENT_PROMPT.format(prompt=c["prompt"]) for c in calls], 32
        )
        return _guarded(lambda ca: placed(ca[0]["image"], ca[1], ca[0].get("mask")), list(zip(calls, answers)))

    def add_pred(ctx, image, prompt, mask=None):
        return _one(add_pred_batch(ctx, [{"image": image, "prompt": prompt, "mask": mask}]))

    def cmi_pred_batch(ctx, calls):
        captions = vlm_answers("captioning", [c["image"] for c in calls], [CAPTION_PROMPT] * len(calls), 96)

        def outpaint(call_caption):
            c, caption = call_caption
            if c.get("left_ratio") is None:
                return {"caption": caption.strip()}
            canvas, mask = expand_canvas(
                ctx, c["image"], c.get("left_ratio"), c.get("right_ratio"), c.get("top_ratio"), c.get("bottom_ratio")
            )
            return {"caption": caption.strip(), "image": canvas, "mask": mask}

        return _guarded(outpaint, list(zip(calls, captions)))

    def cmi_pred(ctx, image, left_ratio=None, right_ratio=None, top_ratio=None, bottom_ratio=None):
        return _one(
            cmi_pred_batch(
                ctx,
                [
                    {
                        "image": image,
                        "left_ratio": left_ratio,
                        "right_ratio": right_ratio,
                        "top_ratio": top_ratio,
                        "bottom_ratio": bottom_ratio,
                    }
                ],
            )
        )

    def pose_start(image, mask, prompt):
        """POSE's prompt names an object and a way to point: find the object (RES), turn it, and edit its box
        only (the rest stays exact). Without a segmentation model or a named object: the whole image."""
        subject = pose_subject(prompt)
        if subject is None or not has_file(store.models.segmentation, "segmentation.json"):
            return mask, None
        found = segment("RES", image, subject)["mask"]
        direction = pose_direction(prompt)
        turned = turn_object(image, found, direction) if direction else None
        return (object_region(found) if mask is None else mask), turned

    def editor(brick):
        def prepare(call):
            image, mask, prompt = call["image"], call.get("mask"), call.get("prompt") or ""
            preimage = call.get("preimage")
            if brick == "POSE":
                mask, preimage = pose_start(image, mask, prompt)
            pre = (
                preimage
                if brick in PREIMAGE_BRICKS or (brick == "FILL" and store.edit_model().backend == "flux_fill")
                else None
            )
            return (
                image[:, :, :3],
                None if mask is None else as_mask(mask),
                prompt,
                pre,
                start_strength(brick, pre, call.get("score")),
                call.get("style"),
            )

        def batch(ctx, calls):
            seed = getattr(ctx, "seed", 0)

            def run_many(prepared):
                images, masks, prompts, pres, strengths, styles = (list(v) for v in zip(*prepared))
                with store.edit_lock:  # edit() switches adapters and scheduler state: one call at a time
                    outs = store.edit_model().edit(
                        brick,
                        images,
                        masks,
                        prompts,
                        preimages=pres,
                        strengths=strengths,
                        styles=styles,
                        seeds=[seed * 1_000_003] * len(images),
                    )
                return [{"image": o} for o in outs]

            return _run_prepared(calls, prepare, run_many)

        def run(ctx, image, mask=None, prompt="", preimage=None, score=None, style=None):
            return _one(
                batch(
                    ctx,
                    [
                        {
                            "image": image,
                            "mask": mask,
                            "prompt": prompt,
                            "preimage": preimage,
                            "score": score,
                            "style": style,
                        }
                    ],
                )
            )

        run.batch = batch
        return run

    add_pred.batch, cmi_pred.batch = add_pred_batch, cmi_pred_batch
    impls = {
        "RES": segmenter("RES"),
        "SOS": segmenter("SOS"),
        "MASK-SEG": segmenter("MASK-SEG"),
        "ADD-PRED": add_pred,
        "CMI-PRED": cmi_pred,
    }
    impls.update({b: editor(b) for b in EDIT_BRICK_NAMES})
    return impls


def has_file(folder: str | Path | None, name: str) -> bool:
    return folder is not None and (Path(folder) / name).is_file()


def has_adapter(folder: str | Path | None) -> bool:
    return has_file(folder, "adapter_config.json")


def available_models(models: BrickModels | str | Path) -> dict[str, bool]:
    """{model-backed brick: whether its trained model is there}; ``models``: the folders, or a run folder."""
    models = BrickModels.of(models)
    present = {
        "segmentation": has_file(models.segmentation, "segmentation.json"),
        "base_vlm": models.base_vlm is not None and Path(models.base_vlm).is_dir(),
        "placement": has_adapter(models.placement),
        "captioning": has_adapter(models.captioning),
        "edit_base": has_file(models.edit_base, "edit_model.json"),
        "edit_lora": True,  # an edit brick without its LoRA runs on the base
    }
    return {brick: all(present[m] for m in needed) for brick, needed in BRICK_MODELS.items()}


def bind_model_bricks(
    registry: BrickRegistry, models: BrickModels | Mapping[str, Any] | str | Path, device: str | None = None
) -> list[str]:
    """Bind every model-backed brick whose trained model exists; ``models`` names the folders (``BrickModels``
    or a mapping of their names), or is a run's results folder. Returns the bound names."""
    if isinstance(models, (str, Path)):
        if not Path(models).is_dir():
            raise FileNotFoundError(f"{models}: no such run folder (expected a pipeline's results/ folder)")
        where, missing = f"trained model in {models}", f"{models}: no trained brick models found under bricks/"
        models = BrickModels.of_run(models)
    else:
        models = BrickModels.of(models)
        where, missing = "trained model", f"no trained brick models found in {models.describe()}"
    store = ModelStore(models, device)
    impls = make_implementations(store)
    bound = []
    for name, ok in available_models(models).items():
        if ok and name in registry:
            registry.bind(name, impls[name], source=where)
            bound.append(name)
    if not bound:
        raise FileNotFoundError(missing)
    return bound
