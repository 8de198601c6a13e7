"""Teacher requests per second against ``transformers serve`` on loopback, at concurrency 1 and 8, and the share of
the teacher's answers the execution filter keeps.

The teacher is a trained Builder of a finished run (default: ``results/builder/sft``, which reads the bare
instruction), served on this machine's CPUs; the rows are held-out GT rows of the same run's shapes world written
in MagicBrush's published layout (a datasets save_to_disk DatasetDict, images embedded, targets included) and read
back through ``data.builder_sources``. Each concurrency asks every row once with a fresh journal (so every request
is sent); then the whole chain (parse, validate, execute with the run's bricks, filter against the targets) runs
from the last journal without a request, for the verdicts.

    python benchmarks/teacher_throughput.py --run results --rows 100 --stub-latency-ms 200

``--stub-latency-ms`` also measures the same requests against a stub endpoint whose latency does not grow with load
(judge_throughput.py's), which shows what the client's concurrency buys where the server is not the bottleneck.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the loopback server helper
sys.path.insert(0, str(Path(__file__).resolve().parent))  # judge_throughput's stub endpoint


def magicbrush_copy(instructions: Path, n: int, out: Path) -> None:
    from datasets import Dataset, DatasetDict

    from lego_edit.data.builder_sources import magicbrush_features

    rows = [r for r in pq.read_table(instructions).to_pylist() if r["split"] == "test"][:n]
    feats = magicbrush_features()
    data = {
        "img_id": [r["id"] for r in rows],
        "turn_index": [1] * len(rows),
        "source_img": [r["image_path"] for r in rows],
        "mask_img": [None] * len(rows),
        "instruction": [r["instruction"] for r in rows],
        "target_img": [r["target_path"] for r in rows],
    }
    DatasetDict({"dev": Dataset.from_dict(data, features=feats)}).save_to_disk(str(out))


def main() -> None:
    from openai_server import serve

    from lego_edit.bricks.registry import default_registry
    from lego_edit.builder.generation import requests_for
    from lego_edit.data.builder_sources import BuilderSource, read_builder_sources
    from lego_edit.data.builder_tables import kept_share
    from lego_edit.data.teacher import TeacherConfig, ask_teacher, teacher_chunk
    from lego_edit.imageio import load_image
    from lego_edit.training.vlm_sft import resolve_base

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="results", help="a finished run (its bricks execute the workflows)")
    ap.add_argument("--teacher", default=None, help="model folder to serve (default: RUN/builder/sft)")
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--prompt-style", default="instruction", choices=["instruction", "registry"])
    ap.add_argument("--stub-latency-ms", type=float, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run = Path(args.run)
    teacher = resolve_base(Path(args.teacher) if args.teacher else run / "builder" / "sft")
    tmp = Path(tempfile.mkdtemp(prefix="teacher_bench_"))
    magicbrush_copy(run / "data" / "instructions" / "gt.parquet", args.rows, tmp / "mb")
    read_builder_sources(
        [BuilderSource(path=str(tmp / "mb"), preset="magicbrush", name="mb")],
        tmp / "rows.parquet",
        tmp / "rejected.parquet",
        tmp / "images",
    )
    rows = pq.read_table(tmp / "rows.parquet").to_pylist()
    images = [load_image(r["image_path"]) for r in rows]
    registry = default_registry()
    requests = requests_for(images, [r["instruction"] for r in rows], registry, args.prompt_style)
    print(f"teacher {teacher}, {len(rows)} rows, max_tokens {args.max_tokens}, prompt style {args.prompt_style}")

    def measure(base_url: str, model: str, c: int, label: str) -> TeacherConfig:
        cfg = TeacherConfig(
            base_url=base_url,
            model=model,
            prompt_style=args.prompt_style,
            concurrency=c,
            max_tokens=args.max_tokens,
            journal=str(tmp / f"journal_{label}_{c}.sqlite"),
        )
        t0 = time.perf_counter()
        answers, sent = ask_teacher(cfg, requests)
        seconds = time.perf_counter() - t0
        failed = sum(not isinstance(a, str) for a in answers)
        rates[label, c] = sent["sent"] / seconds
        print(
            f"{label} concurrency {c}: {sent['sent']} requests, {failed} failed, {seconds:.2f} s, "
            f"{rates[label, c]:.2f} req/s"
        )
        return cfg

    rates: dict = {}
    if args.stub_latency_ms is not None:
        from judge_throughput import stub_server

        with stub_server(args.stub_latency_ms / 1000) as (url, model):
            for c in args.concurrency:
                measure(url, model, c, f"stub {args.stub_latency_ms:.0f} ms")
    with serve(teacher) as server:
        print(f"server up in {server.startup_s:.1f} s")
        for c in args.concurrency:
            cfg = measure(server.base_url, server.model, c, "transformers serve")
        t0 = time.perf_counter()
        stats = teacher_chunk(rows, cfg, run, tmp / "verdicts.parquet")
        print(f"chain from the journal: {stats['sent']} requests sent, {time.perf_counter() - t0:.1f} s")
    verdicts = pq.read_table(tmp / "verdicts.parquet").to_pylist()
    print("verdicts:", dict(Counter(v["status"] for v in verdicts)))
    print(f"share of the teacher's answers kept: {kept_share(verdicts):.3f}")
    lo, hi = min(args.concurrency), max(args.concurrency)
    for label in dict.fromkeys(k[0] for k in rates):
        print(f"{label}: speed-up of concurrency {hi} over {lo}: {rates[label, hi] / rates[label, lo]:.2f}x")


if __name__ == "__main__":
    main()
