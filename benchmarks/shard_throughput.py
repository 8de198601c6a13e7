"""Shard-writing throughput: lego_edit's writer against a bare tarfile loop doing the same rendering and encoding.

Both loops draw the same shapes-world samples from the same seeds (rendering included), PNG-encode them with
the same encoder and write tar files of the same size; only the writing differs:

  writer  lego_edit.data.shards: encode_sample + ShardSetWriter (webdataset TarWriter, per-sample sha256 and
          manifest rows), as the make_shards rule runs it;
  bare    encode_png + json.dumps, then tarfile.addfile for each member, nothing else.

The ratio writer / bare isolates the writer's overhead (target: >= 0.8). Loops alternate and the best of
``--repeats`` runs counts, so a busy machine biases neither side.

    python benchmarks/shard_throughput.py --family edit --scenes 300
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from lego_edit.data import brick_samples as bs
from lego_edit.data.shapes import sample_scene
from lego_edit.data.shards import ShardSetWriter, _kind, encode_sample
from lego_edit.imageio import encode_png


def draw(family: str, n_scenes: int, seed: int = 0):
    """(key, images, meta) of ``family`` for ``n_scenes`` scenes, rendered on the fly as make_shards does."""
    for i in range(n_scenes):
        scene = sample_scene(np.random.default_rng([seed, 1, i]))
        rng = np.random.default_rng([seed, 99, i])
        samples = (
            bs.edit_samples(scene, rng, 1)
            if family == "edit"
            else bs.segmentation_samples(scene, rng, 4)
            if family == "segmentation"
            else bs.captioning_samples(scene, rng, 1)
        )
        for k, (images, meta) in enumerate(samples):
            yield f"{family}_{i:06d}_{k:02d}", images, meta


def run_writer(family: str, n_scenes: int, out: Path, per_shard: int) -> int:
    writer = ShardSetWriter(out, family, "train", per_shard)
    try:
        for key, images, meta in draw(family, n_scenes):
            writer.write(encode_sample(key, images, {**meta, "split": "train"}), _kind(family, meta))
    finally:
        writer.close()
    return len(writer.rows)


def run_bare(family: str, n_scenes: int, out: Path, per_shard: int) -> int:
    count, tar = 0, None
    try:
        for key, images, meta in draw(family, n_scenes):
            if count % per_shard == 0:
                if tar is not None:
                    tar.close()
                tar = tarfile.open(out / f"bare-{count // per_shard:06d}.tar", "w")
            members = {f"{name}.png": encode_png(a) for name, a in images.items()}
            members["json"] = json.dumps({**meta, "split": "train"}, sort_keys=True, separators=(",", ":")).encode()
            for ext in sorted(members):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(members[ext])
                tar.addfile(info, io.BytesIO(members[ext]))
            count += 1
    finally:
        if tar is not None:
            tar.close()
    return count


def main(argv=None) -> float:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", default="edit", choices=["edit", "segmentation", "captioning"])
    ap.add_argument("--scenes", type=int, default=300, help="scenes to draw samples from (edit: ~6 samples each)")
    ap.add_argument("--samples-per-shard", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    best = {"writer": float("inf"), "bare": float("inf")}
    counts = {}
    loops = {"writer": run_writer, "bare": run_bare}
    run_writer(args.family, 5, Path(tempfile.mkdtemp()), args.samples_per_shard)  # warm up imports and caches
    for _ in range(args.repeats):
        for name, loop in loops.items():
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                counts[name] = loop(args.family, args.scenes, Path(tmp), args.samples_per_shard)
                best[name] = min(best[name], time.perf_counter() - t0)
                size = sum(p.stat().st_size for p in Path(tmp).iterdir())
            counts[name + "_bytes"] = size
    assert counts["writer"] == counts["bare"], counts

    rate = {name: counts[name] / best[name] for name in loops}
    ratio = rate["writer"] / rate["bare"]
    print(
        f"family={args.family} scenes={args.scenes} samples={counts['writer']} "
        f"samples_per_shard={args.samples_per_shard} best of {args.repeats}"
    )
    print(f"{'loop':<8} {'seconds':>8} {'samples/s':>10} {'MB written':>11}")
    for name in loops:
        print(f"{name:<8} {best[name]:>8.3f} {rate[name]:>10.1f} {counts[name + '_bytes'] / 1e6:>11.2f}")
    print(f"ratio writer/bare = {ratio:.3f} (target >= 0.8)")
    return ratio


if __name__ == "__main__":
    main()
