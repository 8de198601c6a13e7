"""Batch offline editing of an image folder: Builder (or a fixed workflow) -> executor -> mirrored output tree.

For every image ``a/b.jpg`` of the input folder the output folder gets ``a/b.png`` (``a/b_1.png``, ``a/b_2.png``
when the workflow returns several images), ``a/b.workflow.json`` (instruction, reasoning, workflow) and a row in
``manifest.parquet`` (see ``manifest.py``). The manifest is rewritten atomically after every batch, so a killed run
loses at most the batch in flight; a rerun skips the items already done and, with ``retry_failed``, retries the
failed ones. An unreadable image, an invalid workflow or a failing brick fails that item, never the batch.
Models load once per process: the registry, the executor and the Builder are built once, on first need.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..builder.generation import BuilderAnswer, build_workflows
from ..imageio import ImageReadError, atomic_write_bytes, encode_png, load_image, load_mask
from ..workflow import BrickContext, ExecutionError, Executor, WorkflowError
from ..workflow.execute import time_limit
from .batch_config import EditConfig, EditSummary
from .inputs import EditItem, collect_items, output_stems, select_chunk
from .manifest import Manifest, empty_record
from .sources import (
    EditError,
    builder_identity,
    check_fixed_workflow,
    load_builder,
    make_registry,
    read_fixed_workflow,
)

log = logging.getLogger(__name__)


def _request_matches(rec: dict, item: EditItem, builder: str) -> bool:
    return rec["instruction"] == item.instruction and rec["mask"] == item.mask and rec["builder"] == builder


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def fit_long_side(image, max_side: int):
    """Scale an image down (area resampling) so its long side is at most ``max_side``; the models work at a
    fixed resolution and a 24-megapixel photo would only cost time and memory."""
    h, w = image.shape[:2]
    if max_side <= 0 or max(h, w) <= max_side:
        return image
    from PIL import Image

    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BOX))


class BatchEditor:
    """One batch edit. ``registry`` and ``backend`` may be given (tests, benchmarks, a caller holding models)."""

    def __init__(self, cfg: EditConfig, registry=None, backend=None):
        t0 = time.perf_counter()
        self.cfg = cfg
        # Where the batch's own time goes (seconds), for the overhead benchmark and the log.
        self.stats = {"setup": 0.0, "plan": 0.0, "workflow_json": 0.0, "manifest": 0.0}
        self.folder, self.out = Path(cfg.folder), Path(cfg.output)
        if not self.folder.is_dir():
            raise EditError(f"{cfg.folder}: no such folder")
        if self.folder.resolve() == self.out.resolve():
            raise EditError("the output folder must not be the input folder (the edits would overwrite the images)")
        if cfg.threads > 0 and (cfg.run or backend is not None):
            import torch

            torch.set_num_threads(cfg.threads)
        self.fixed = None
        if cfg.workflow:
            self.fixed, self.label = read_fixed_workflow(cfg.workflow)
            self.style = None
        else:
            self.label, self.style = builder_identity(
                cfg.run, cfg.builder, cfg.builder_url, cfg.builder_model, cfg.prompt_style
            )
        self.registry = registry if registry is not None else make_registry(cfg.run, cfg.device)
        if self.fixed is not None:
            check_fixed_workflow(self.fixed, cfg.workflow, self.registry, cfg.run)
        self.executor = Executor(self.registry, BrickContext(seed=cfg.seed, device=cfg.device))
        self._backend = backend
        self._wf_text: tuple[object, str] = (None, "null")
        self.manifest = Manifest(cfg.manifest_path())
        items = collect_items(
            self.folder,
            self.out,
            instruction=cfg.instruction,
            mapping=cfg.mapping,
            fixed_workflow=self.fixed is not None,
        )
        if self.fixed is not None:  # the workflow's own description stands for a missing instruction
            process = self.fixed.process or None
            items = [it if it.instruction or it.skip else dataclasses.replace(it, instruction=process) for it in items]
        self.stems = output_stems([it.file for it in items])  # over the whole folder: chunks agree on names
        self.items = select_chunk(items, cfg.chunk, cfg.chunks)
        self.stats["setup"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ planning
    def plan(self) -> tuple[list[EditItem], dict[str, int]]:
        """The items to edit now, and counts of those left alone; records skipped items, drops stale rows."""
        counts = {"skipped": 0, "done_before": 0, "failed_before": 0}
        todo = []
        current = {it.file for it in self.items}
        stale = [f for f in self.manifest.records if f not in current]
        for f in stale:  # images gone from the folder (or from this chunk): the manifest describes this batch
            self.manifest.remove(f)
        for item in self.items:
            rec = self.manifest.get(item.file)
            if item.skip:
                counts["skipped"] += 1
                if rec is None or rec["status"] != "skipped" or rec["error"] != item.skip:
                    self.manifest.set(
                        empty_record(item.file) | {"status": "skipped", "error": item.skip, "updated": _now()}
                    )
                continue
            if rec is not None and _request_matches(rec, item, self.label):
                if rec["status"] == "ok" and rec["outputs"] and all((self.out / o).is_file() for o in rec["outputs"]):
                    counts["done_before"] += 1
                    continue
                if rec["status"] == "failed" and not self.cfg.retry_failed:
                    counts["failed_before"] += 1
                    continue
            todo.append(item)
        return todo, counts

    def run(self) -> EditSummary:
        start = time.perf_counter()
        todo, counts = self.plan()
        self.stats["plan"] = time.perf_counter() - start
        self._flush()
        done = {"ok": 0, "failed": 0}
        log.info(
            "%d images to edit (%d already done, %d failed earlier, %d skipped)",
            len(todo),
            counts["done_before"],
            counts["failed_before"],
            counts["skipped"],
        )
        from tqdm import tqdm

        bar = tqdm(
            total=len(todo), unit="img", desc="editing", disable=not (self.cfg.progress and todo), dynamic_ncols=True
        )
        try:
            for i in range(0, len(todo), self.cfg.batch_size):
                for rec in self.edit_batch(todo[i : i + self.cfg.batch_size]):
                    done[rec["status"]] += 1
                    bar.update(1)
                self._flush()
                bar.set_postfix(ok=done["ok"], failed=done["failed"], refresh=False)
        finally:
            bar.close()
            self._flush(close=True)  # also on Ctrl-C or an unexpected error: keep what is done
        return EditSummary(
            len(self.items),
            done["ok"],
            done["failed"],
            counts["skipped"],
            counts["done_before"],
            counts["failed_before"],
            time.perf_counter() - start,
            str(self.manifest.path),
        )

    def _flush(self, close: bool = False) -> None:
        t0 = time.perf_counter()
        if close:
            self.manifest.close()
        else:
            self.manifest.flush()
        self.stats["manifest"] += time.perf_counter() - t0

    # ------------------------------------------------------------------ one batch
    def backend(self):
        if self._backend is None:
            c = self.cfg
            self._backend = load_builder(
                c.run,
                c.builder,
                c.builder_url,
                c.builder_model,
                device=c.device,
                max_new_tokens=c.max_new_tokens,
                batch_size=c.batch_size,
                seed=c.seed,
                concurrency=c.concurrency,
            )
        return self._backend

    @staticmethod
    def _finish(rec: dict, since: float | None) -> None:
        """The item's wall time: reading it, its share of the Builder batch, and everything after (``since``)."""
        rec["total_seconds"] = (
            rec["load_seconds"] + rec["builder_seconds"] + (time.perf_counter() - since if since is not None else 0.0)
        )
        rec["updated"] = _now()

    def _fail(self, rec: dict, error: str, since: float | None = None) -> dict:
        error = error.encode("utf-8", "backslashreplace").decode("utf-8")  # parquet strings must be valid UTF-8
        rec.update(status="failed", error=error)
        self._finish(rec, since)
        log.info("%s failed: %s", rec["file"], error)
        self.manifest.set(rec)
        return rec

    def _load(self, item: EditItem, rec: dict):
        t0 = time.perf_counter()
        path = self.folder / item.file
        what = "image"
        try:
            image = load_image(path, self.executor.limits)
            image = fit_long_side(image, self.cfg.max_side)
            mask = None
            if item.mask:
                what, path = "mask", self.folder / item.mask
                mask = load_mask(path, size=(image.shape[1], image.shape[0]), limits=self.executor.limits)
        except ImageReadError as e:
            rec["load_seconds"] = time.perf_counter() - t0
            self._fail(rec, f"unreadable {what}: {str(e).removeprefix(f'{path}: ')}")
            return None
        rec["load_seconds"] = time.perf_counter() - t0
        return image, mask

    def _answers(self, ready: list) -> list[BuilderAnswer]:
        if self.fixed is not None:
            return [BuilderAnswer(None, self.fixed, None, True)] * len(ready)
        t0 = time.perf_counter()
        try:
            answers = build_workflows(
                self.backend(),
                [r[2] for r in ready],
                [r[0].instruction for r in ready],
                self.registry,
                self.style,
                [r[3] is not None for r in ready],
                self.executor.limits,
            )
        except Exception as e:  # a local backend raises for the whole batch (e.g. out of memory): fail the batch
            log.exception("the Builder failed on a batch of %d", len(ready))
            error = f"builder request failed: {type(e).__name__}: {e}"
            answers = [BuilderAnswer(None, None, error, False)] * len(ready)
        share = (time.perf_counter() - t0) / len(ready)
        for r in ready:
            r[1]["builder_seconds"] = share
        return answers

    def edit_batch(self, batch: list[EditItem]) -> list[dict]:
        records, ready = [], []
        for item in batch:
            rec = empty_record(item.file) | {"instruction": item.instruction, "mask": item.mask, "builder": self.label}
            records.append(rec)
            loaded = self._load(item, rec)
            if loaded is not None:
                ready.append((item, rec, *loaded))
        if ready:
            for (item, rec, image, mask), answer in zip(ready, self._answers(ready)):
                self.edit_one(item, rec, image, mask, answer)
                self._flush()  # each finished image is on record at once: a kill redoes none of them
        return records

    @staticmethod
    def _tail(answer: BuilderAnswer) -> dict:
        tail = {
            "reasoning": answer.workflow.reasoning if answer.workflow is not None else None,
            "workflow": answer.workflow,
        }
        return tail | ({"answer": answer.text} if answer.text is not None else {})

    def _write_doc(self, rel: str, doc: dict, workflow) -> None:
        """The item's .workflow.json: top-level keys one per line, the workflow one step per line. Written with
        json's C encoder (an indented dump runs json's pure-Python encoder, several times slower); the workflow's
        text is made once per workflow object, so a fixed workflow is encoded once per run."""
        t0 = time.perf_counter()
        if workflow is not None and self._wf_text[0] is not workflow:
            d = workflow.to_dict()
            steps = ",\n    ".join(json.dumps(x, ensure_ascii=False) for x in d["pipeline"])
            self._wf_text = (
                workflow,
                f'{{"process": {json.dumps(d["process"], ensure_ascii=False)},\n   "pipeline": [\n    {steps}]}}',
            )
        lines = [
            f"  {json.dumps(k)}: "
            + (
                self._wf_text[1]
                if k == "workflow" and workflow is not None
                else json.dumps(v, ensure_ascii=False, default=str)
            )
            for k, v in doc.items()
        ]
        text = "{\n" + ",\n".join(lines) + "\n}\n"
        # A model's answer may hold a lone surrogate ("\ud800" from an endpoint): backslashreplace writes it as
        # that very JSON escape, so the file stays valid UTF-8 and valid JSON.
        atomic_write_bytes(self.out / rel, text.encode("utf-8", "backslashreplace"))
        self.stats["workflow_json"] += time.perf_counter() - t0

    def edit_one(self, item: EditItem, rec: dict, image, mask, answer: BuilderAnswer) -> dict:
        since = time.perf_counter()
        previous = self.manifest.get(item.file)
        stem = self.stems[item.file]
        wf = answer.workflow
        doc = {"file": item.file, "instruction": item.instruction, "mask": item.mask, "builder": self.label}
        wf_file = f"{stem}.workflow.json"
        if wf is None or not answer.valid:
            rec["workflow_file"] = wf_file
            self._write_doc(wf_file, doc | {"status": "failed", "error": answer.error, **self._tail(answer)}, wf)
            return self._fail(rec, f"builder: {answer.error}", since)
        t0 = time.perf_counter()
        try:
            with time_limit(self.cfg.item_seconds):
                result = self.executor.run(wf, image, mask)
        except TimeoutError:
            error = f"timed out: the workflow ran past {self.cfg.item_seconds:g} s (item_seconds)"
        except WorkflowError as e:
            error = "invalid workflow: " + "; ".join(str(i) for i in e.issues[:5])
        except ExecutionError as e:  # the time bound firing inside a brick arrives wrapped as that step's failure
            error = (
                f"timed out: the workflow ran past {self.cfg.item_seconds:g} s (item_seconds); {e}"
                if isinstance(e.__cause__, TimeoutError)
                else f"brick failed: {e}"
            )
        except Exception as e:  # a bug somewhere below: record it, keep the batch going
            log.exception("%s: unexpected error", item.file)
            error = f"{type(e).__name__}: {e}"
        else:
            error = None
        rec["execute_seconds"] = time.perf_counter() - t0
        rec["workflow_file"] = wf_file
        if error is not None:
            self._write_doc(wf_file, doc | {"status": "failed", "error": error, **self._tail(answer)}, wf)
            return self._fail(rec, error, since)
        rec["brick_seconds"] = result.brick_seconds
        rec["steps"] = json.dumps(
            [{"step": s.step, "brick": s.brick, "seconds": round(s.seconds, 6)} for s in result.steps]
        )
        n = len(result.images)
        names = [f"{stem}.png"] if n == 1 else [f"{stem}_{i}.png" for i in range(1, n + 1)]
        t0 = time.perf_counter()
        for name, array in zip(names, result.images):
            atomic_write_bytes(self.out / name, encode_png(array))
        rec["save_seconds"] = time.perf_counter() - t0
        self._write_doc(
            wf_file,
            doc
            | {
                "status": "ok",
                "outputs": names,
                "warnings": [w.to_dict() for w in result.warnings],
                **self._tail(answer),
            },
            wf,
        )
        self._remove_stale(previous, names)
        rec.update(status="ok", outputs=names)
        self._finish(rec, since)
        self.manifest.set(rec)
        return rec

    def _remove_stale(self, previous: dict | None, names: list[str]) -> None:
        """Results of an earlier edit of this item that this one did not rewrite (it returned fewer images)."""
        stale = [o for o in (previous or {}).get("outputs") or [] if o not in names]
        root = self.out.resolve() if stale else None
        for old in stale:
            path = (self.out / old).resolve()
            if path.is_relative_to(root) and path.suffix == ".png":
                path.unlink(missing_ok=True)


def edit_folder(cfg: EditConfig, *, registry=None, backend=None) -> EditSummary:
    """Edit every image of ``cfg.folder`` (or of its chunk) into ``cfg.output``; see the module docstring."""
    return BatchEditor(cfg, registry=registry, backend=backend).run()


def edit_chunk(cfg: EditConfig, done_manifest: str | os.PathLike) -> EditSummary:
    """Edit one chunk, then copy its manifest to ``done_manifest`` (a Snakemake rule's output, written only when
    the chunk is finished; the running manifest in the output folder is what a rerun resumes from)."""
    summary = edit_folder(cfg)
    log.info("%s", summary)
    atomic_write_bytes(done_manifest, Path(summary.manifest).read_bytes())
    return summary
