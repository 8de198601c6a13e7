"""Stage 3's reward, per GRPO step: a serial loop against the batched reward (``CriticReward``).

One step's completions are sampled the way stage 3 samples them: ``--prompts`` open-split training instructions,
``--generations`` answers each from a trained Builder at its training temperature. Both ways then score the same
completions with a run's trained bricks and critic, each starting with nothing cached:

  serial   each answer parsed, validated and executed on its own (``Executor.run``), then scored by the critic
           one at a time: what a plain reward function does
  batched  ``CriticReward``: the distinct answers executed together (``Executor.run_batch``: one model pass per
           brick and round), identical answers once, one critic call for the executed ones; with an endpoint
           critic, ``concurrency`` judge requests in flight

Prints seconds, rewards per second, the speed-up and the largest difference between the two rewards (0 expected).

    python benchmarks/reward_throughput.py --run results --builder grpo_gt --prompts 8 --generations 8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lego_edit.bricks.models import bind_model_bricks
from lego_edit.bricks.registry import default_registry
from lego_edit.builder.rewards import FAILED_PENALTY, INVALID_PENALTY, CriticReward, completion_text, try_parse
from lego_edit.data.dataset import load_instructions, select_rows
from lego_edit.models.critic import load_critic_dir
from lego_edit.workflow import BrickContext, Executor, WorkflowError
from lego_edit.workflow.values import rgb


def sample_step(run: Path, builder: str, prompts: int, generations: int, temperature: float, seed: int):
    from lego_edit.builder.backends import GenerationRequest, LocalVLMBackend
    from lego_edit.builder.prompting import builder_user_text

    rows = select_rows(load_instructions(run / "data/instructions/open.parquet", "train"), prompts, seed)
    images = [np.asarray(Image.open(r["image_path"]).convert("RGB")) for r in rows]
    backend = LocalVLMBackend(
        run / "builder" / builder, max_new_tokens=320, do_sample=True, temperature=temperature, seed=seed, batch_size=32
    )
    requests = [
        GenerationRequest(builder_user_text(r["instruction"]), [img], None)
        for r, img in zip(rows, images)
        for _ in range(generations)
    ]
    texts = backend.generate(requests)
    repeat = lambda xs: [x for x in xs for _ in range(generations)]  # noqa: E731
    return [str(t) for t in texts], repeat(images), repeat([r["instruction"] for r in rows])


def serial_rewards(executor, critic, completions, images, instructions) -> list[float]:
    out = []
    for text, image, instruction in zip(completions, images, instructions):
        wf = try_parse(completion_text(text))
        if wf is None:
            out.append(INVALID_PENALTY)
            continue
        try:
            result = executor.run(wf, image)
        except WorkflowError:
            out.append(INVALID_PENALTY)
            continue
        except Exception:  # noqa: BLE001 - a brick failure scores as a failed edit, as in the reward
            out.append(FAILED_PENALTY)
            continue
        s = critic.score([instruction], [image], [rgb(result.images[0])])[0]
        out.append(FAILED_PENALTY if s.score is None else float(s.score))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default="results", help="a pipeline run's results folder")
    p.add_argument("--builder", default="grpo_gt", help="the Builder stage that samples (stage 3 starts from grpo_gt)")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--generations", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    completions, images, instructions = sample_step(
        run, args.builder, args.prompts, args.generations, args.temperature, args.seed
    )
    registry = default_registry()
    bind_model_bricks(registry, run)
    critic = load_critic_dir(run / "bricks/critic")
    executor = Executor(registry, BrickContext(seed=args.seed))
    serial_rewards(executor, critic, completions[:2], images[:2], instructions[:2])  # models loaded, warm
    t = time.perf_counter()
    serial = serial_rewards(executor, critic, completions, images, instructions)
    serial_s = time.perf_counter() - t
    t = time.perf_counter()
    batched = CriticReward(executor, critic, seconds=60)(
        completions=completions, image=images, instruction=instructions
    )
    batched_s = time.perf_counter() - t
    n = len(completions)
    distinct = len(set(zip(completions, instructions)))
    diff = max(abs(a - b) for a, b in zip(serial, batched))
    print(f"{n} completions ({distinct} distinct) of {args.prompts} prompts, critic {type(critic).__name__}")
    print(f"serial   {serial_s:7.2f} s  {n / serial_s:7.2f} rewards/s")
    print(f"batched  {batched_s:7.2f} s  {n / batched_s:7.2f} rewards/s  speed-up {serial_s / batched_s:.1f}x")
    print(f"largest reward difference: {diff:.2e}")


if __name__ == "__main__":
    main()
