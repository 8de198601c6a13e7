"""``lego-edit plan``: what a config's training jobs ask of a GPU, before a cluster is booked.

Per training rule: the processes it launches (its ``gpu`` resource), the memory one GPU holds (weights, the
trainable parameters' fp32 copy, gradients and Adam state, activations with or without recomputation, the
logits, a GRPO stage's generation cache and reference model), whether that fits the GPU, and an estimated step
time and GPU-hours. The estimates are first-order (the usual transformer counts: Korthikanti et al. 2022 for
activations, 6 x parameters x tokens for a training step's FLOPs, weight bytes over memory bandwidth for a
decoding step), meant to catch a stage that cannot fit or would run for weeks, not to replace a profiler.

Model sizes come from the config (a Builder built from config), a local checkpoint's ``config.json``, or
``KNOWN_MODELS`` for the hub ids the paper config names (no download).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

GB = 1e9
PATCH_TOKENS_PX = 28  # Qwen2.5-VL: 14 px patches merged 2 x 2, one LLM token per 28 x 28 pixels


@dataclass
class TextModel:
    """The decoder shapes that set memory and compute (the vision tower counts as ``vision_params``)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    vision_params: float = 0.0
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_params(self) -> float:
        qkv = self.hidden * (self.hidden + 2 * self.kv_dim) + self.hidden + 2 * self.kv_dim  # Qwen2: q/k/v biases
        return qkv + self.hidden * self.hidden + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def params(self) -> float:
        embed = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * self.layer_params() + embed + self.hidden + self.vision_params

    def lora_params(self, rank: int, targets: list[str]) -> float:
        """Adapter parameters: rank x (in + out) per targeted projection, per layer."""
        shapes = {
            "q_proj": (self.hidden, self.hidden),
            "k_proj": (self.hidden, self.kv_dim),
            "v_proj": (self.hidden, self.kv_dim),
            "o_proj": (self.hidden, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }
        return self.layers * sum(rank * sum(shapes[t]) for t in targets if t in shapes)


def vision_params(depth: int, hidden: int, intermediate: int, out_hidden: int, patch: int = 14) -> float:
    """A Qwen2.5-VL vision tower: SwiGLU blocks, a 2-frame patch embedding, a 2 x 2 patch merger."""
    block = 4 * hidden * hidden + 3 * hidden * intermediate + 5 * hidden + 2 * intermediate + 2 * hidden
    merger = hidden + 16 * hidden * hidden + 4 * hidden + 4 * hidden * out_hidden + out_hidden
    return depth * block + 3 * 2 * patch * patch * hidden + merger


# Published config.json shapes; the counts reproduce the published totals exactly (8,292,166,656 and
# 3,754,622,976 parameters). MiMo-VL-7B is a Qwen2.5-VL-7B.
QWEN25_VL_7B = TextModel(
    layers=28,
    hidden=3584,
    intermediate=18944,
    heads=28,
    kv_heads=4,
    vocab=152064,
    vision_params=vision_params(32, 1280, 3420, 3584),
)
QWEN25_VL_3B = TextModel(
    layers=36,
    hidden=2048,
    intermediate=11008,
    heads=16,
    kv_heads=2,
    vocab=151936,
    vision_params=vision_params(32, 1280, 3420, 2048),
    tied_embeddings=True,
)
KNOWN_MODELS = {
    "XiaomiMiMo/MiMo-VL-7B-RL": QWEN25_VL_7B,
    "XiaomiMiMo/MiMo-VL-7B-SFT": QWEN25_VL_7B,
    "Qwen/Qwen2.5-VL-7B-Instruct": QWEN25_VL_7B,
    "Qwen/Qwen2.5-VL-3B-Instruct": QWEN25_VL_3B,
}
# FLUX.1-Fill-dev: 19 double-stream + 38 single-stream blocks of width 3072 (11.9B), T5-XXL encoder (4.76B),
# CLIP-L (0.12B), VAE (0.08B); 64 latent channels in, 16 x 16 pixels per image token.
FLUX_FILL = {
    "transformer": 11.9e9,
    "text_encoders": 4.88e9,
    "vae": 0.084e9,
    "blocks": 57,
    "hidden": 3072,
    "text_tokens": 512,
    "px_per_token": 16,
}


@dataclass
class GPU:
    """The GPU the plan is checked against (defaults: an A100 80 GB)."""

    memory_gb: float = 80.0
    tflops: float = 312.0  # dense bf16
    bandwidth_tbs: float = 2.0
    mfu: float = 0.35  # the share of peak FLOPs a training step reaches


@dataclass
class JobPlan:
    rule: str
    gpus: int
    model: str
    parts_gb: dict = field(default_factory=dict)
    step_seconds: float = 0.0
    steps: int = 0
    note: str = ""

    @property
    def total_gb(self) -> float:
        return sum(self.parts_gb.values())

    @property
    def gpu_hours(self) -> float:
        return self.step_seconds * self.steps * max(1, self.gpus) / 3600


def text_model(vlm: dict, vocab_size: int = 1024) -> tuple[str, TextModel]:
    """The Builder base's shapes: built from config, read from a local config.json, or a known hub id."""
    base = vlm.get("base")
    if not base:
        hidden, heads = vlm.get("hidden_size", 128), vlm.get("num_heads", 4)
        vision = vision_params(
            vlm.get("vision_depth", 2),
            vlm.get("vision_hidden_size", 64),
            vlm.get("vision_intermediate_size", 128),
            hidden,
        )
        return "built from config", TextModel(
            vlm.get("num_layers", 2),
            hidden,
            vlm.get("intermediate_size", 256),
            heads,
            vlm.get("num_kv_heads", 2),
            vocab_size,
            vision,
        )
    local = Path(base) / "config.json"
    if local.is_file():
        c = json.loads(local.read_text())
        t, v = c.get("text_config", c), c.get("vision_config")
        vision = (
            0.0
            if not v
            else vision_params(
                v["depth"],
                v["hidden_size"],
                v["intermediate_size"],
                v.get("out_hidden_size", t["hidden_size"]),
                v.get("patch_size", 14),
            )
        )
        return base, TextModel(
            t["num_hidden_layers"],
            t["hidden_size"],
            t["intermediate_size"],
            t["num_attention_heads"],
            t.get("num_key_value_heads", t["num_attention_heads"]),
            t["vocab_size"],
            vision,
            bool(c.get("tie_word_embeddings", False)),
        )
    if base in KNOWN_MODELS:
        return base, KNOWN_MODELS[base]
    raise ValueError(
        f"unknown size for builder.vlm.base {base!r}: give a local checkpoint folder (its config.json "
        f"is read) or add it to lego_edit.plan.KNOWN_MODELS"
    )


def _train_states(trainable: float, full: bool, weight_bytes: int) -> float:
    """Trainable parameters' gradients and AdamW state: fp32 adapters (weights 4 + grads 4 + moments 8 bytes), or
    a full fine-tune in mixed precision (grads in the weight dtype, an fp32 master copy, moments)."""
    return trainable * (weight_bytes + 4 + 8) if full else trainable * 16


def _activations(m: TextModel, tokens: float, checkpointing: bool) -> float:
    """Bytes a decoder keeps for the backward pass over ``tokens`` tokens (bf16, flash attention: no s^2 term):
    34 x hidden bytes per token per layer, or with recomputation each layer's input plus one layer's worth."""
    per_layer = 34 * m.hidden * tokens
    return m.layers * 2 * m.hidden * tokens + per_layer if checkpointing else m.layers * per_layer


def builder_job(
    rule: str, gpus: int, name: str, m: TextModel, settings: dict, prompt_tokens: int, gpu: GPU, grpo: bool
) -> JobPlan:
    world = max(1, gpus)
    lora = settings.get("lora")
    targets = (lora or {}).get("target_modules") or [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    trainable = m.lora_params(lora["rank"], targets) if lora else m.params
    wbytes = 2  # bf16 weights, as the GPU stages load them
    ckpt = bool(settings.get("gradient_checkpointing"))
    parts = {"weights": m.params * wbytes / GB, "trainable states": _train_states(trainable, not lora, wbytes) / GB}
    if grpo:
        completions = settings["prompts_per_step"] * settings["num_generations"] / world  # generated together
        micro = completions / settings.get("grad_accum", 1)  # trained on together
        completion = settings.get("max_completion_length", 320)
        seq = prompt_tokens + completion
        tokens = completions * seq
        parts["activations"] = _activations(m, micro * seq, ckpt) / GB
        # fp32 log-probabilities of the completion tokens over the vocabulary, and their gradient
        parts["logits"] = micro * completion * m.vocab * 8 / GB
        parts["generation cache"] = completions * seq * m.layers * 2 * m.kv_dim * 2 / GB
        if settings.get("beta", 0.04) > 0 and not lora:  # with LoRA the reference is the base, adapters off
            parts["reference model"] = m.params * wbytes / GB
        if settings.get("use_vllm"):
            parts["vLLM share"] = 0.3 * gpu.memory_gb  # TRL's vllm_gpu_memory_utilization default (colocate)
        flops = 6 * m.params * tokens + 2 * m.params * completions * completion
        decode = completion * (m.params * wbytes + parts["generation cache"] * GB) / (gpu.bandwidth_tbs * 1e12)
        step = flops / (gpu.tflops * 1e12 * gpu.mfu) + decode
        note = (
            f"{completions:g} completions of {prompt_tokens}+{completion} tokens per GPU, trained on "
            f"{micro:g} at a time"
        )
    else:
        micro = settings["batch_size"] / world
        seq = settings.get("max_length", 1024)
        tokens = micro * seq
        parts["activations"] = _activations(m, tokens, ckpt) / GB
        parts["logits"] = tokens * m.vocab * 8 / GB
        step = 6 * m.params * tokens * settings.get("grad_accum", 1) / (gpu.tflops * 1e12 * gpu.mfu)
        note = f"{micro:g} sequences of up to {seq} tokens per GPU per micro-step"
    note += (
        f"; {'LoRA' if lora else 'full'} ({trainable / 1e6:,.0f}M trainable), "
        f"activations {'recomputed' if ckpt else 'kept'}"
    )
    return JobPlan(rule, gpus, name, parts, step, settings["steps"], note)


def flux_lora_job(gpus: int, edit: dict, gpu: GPU) -> JobPlan:
    flux, lora = edit.get("flux") or {}, edit["lora"]
    res = flux.get("resolution", 768)
    tokens_per_image = (res // FLUX_FILL["px_per_token"]) ** 2 + FLUX_FILL["text_tokens"]
    micro = lora["train"]["batch_size"] / max(1, gpus)
    rank = lora.get("rank", 32)
    # ICEdit's targets: the attention and feed-forward projections of every block (about 8 hidden x hidden
    # matrices and two 4x-wide ones per block)
    trainable = FLUX_FILL["blocks"] * rank * FLUX_FILL["hidden"] * (8 * 2 + 2 * 5)
    weights = FLUX_FILL["transformer"] + FLUX_FILL["text_encoders"] + FLUX_FILL["vae"]
    tokens = micro * tokens_per_image
    m = TextModel(FLUX_FILL["blocks"], FLUX_FILL["hidden"], 4 * FLUX_FILL["hidden"], 24, 24, 0)
    parts = {
        "weights": weights * 2 / GB,
        "trainable states": _train_states(trainable, False, 2) / GB,
        "activations": _activations(m, tokens, False) / GB,
    }
    step = 6 * FLUX_FILL["transformer"] * tokens / (gpu.tflops * 1e12 * gpu.mfu)
    return JobPlan(
        "train_edit_lora",
        gpus,
        flux.get("pretrained") or "FLUX (built from config)",
        parts,
        step,
        lora["train"]["steps"],
        f"{micro:g} images of {tokens_per_image} tokens per GPU; LoRA rank {rank} "
        f"({trainable / 1e6:,.0f}M trainable), activations kept",
    )


def prompt_tokens(config: dict) -> int:
    """Image tokens plus the system prompt (the registry's brick library for a real VLM; about 4 characters a
    token) plus the instruction."""
    from .bricks.registry import default_registry
    from .builder.prompting import builder_system_text

    image = config["builder"]["vlm"].get("image_size", 112)
    system = builder_system_text(default_registry(), config["builder"].get("prompt_style", "instruction")) or ""
    return (image // PATCH_TOKENS_PX) ** 2 + len(system) // 4 + 64


def plan(config: dict, gpu: GPU | None = None) -> list[JobPlan]:
    gpu = gpu or GPU()
    b, bricks = config["builder"], config["bricks"]
    name, m = text_model(b["vlm"], b.get("vocab_size", 1024))
    prompt = prompt_tokens(config)
    jobs = [
        builder_job(
            f"train_builder_{stage}", int(b.get("gpus", 0)), name, m, b[stage], prompt, gpu, grpo=stage != "sft"
        )
        for stage in ("sft", "grpo_gt", "grpo_critic")
    ]
    for family in ("placement", "captioning"):  # LoRAs on the Builder's base VLM
        section = bricks[family]
        jobs.append(
            builder_job(
                f"train_vlm_brick ({family})",
                int(section.get("gpus", 0)),
                name,
                m,
                {"max_length": 1024, **section["train"]},
                prompt,
                gpu,
                grpo=False,
            )
        )
    edit = bricks["edit"]
    if edit.get("backend") == "flux_fill" and (edit.get("flux") or {}).get("pretrained"):
        jobs.append(flux_lora_job(int(edit.get("gpus", 0)), edit, gpu))
    return jobs


def format_plan(jobs: list[JobPlan], gpu: GPU) -> str:
    lines = [
        f"GPU: {gpu.memory_gb:g} GB, {gpu.tflops:g} TFLOP/s bf16 at {gpu.mfu:.0%} MFU, {gpu.bandwidth_tbs:g} TB/s",
        "",
    ]
    total_hours = 0.0
    for j in jobs:
        fits = "fits" if j.total_gb <= gpu.memory_gb else "DOES NOT FIT"
        lines.append(f"{j.rule}: {j.gpus} GPU(s), {j.model}")
        lines.append(
            "  per GPU: "
            + ", ".join(f"{k} {v:.1f}" for k, v in j.parts_gb.items())
            + f" = {j.total_gb:.1f} GB ({fits})"
        )
        lines.append(f"  {j.note}")
        lines.append(f"  step ~{j.step_seconds:.1f} s x {j.steps} steps = {j.gpu_hours:.1f} GPU-hours")
        total_hours += j.gpu_hours
    lines.append("")
    lines.append(f"training GPU-hours, all jobs above: {total_hours:.0f}")
    lines.append(
        "(sequences at their configured maximum; a GRPO step's reward computation, the bricks and the "
        "judge, is not included)"
    )
    return "\n".join(lines)


def load_config(configfiles: list[str | Path]) -> dict:
    """config/config.yaml with each file merged over it, as Snakemake's --configfile does."""
    import yaml

    def merge(a: dict, b: dict) -> dict:
        for k, v in b.items():
            a[k] = merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
        return a

    defaults = Path(__file__).resolve().parents[1] / "config" / "config.yaml"  # the checkout's defaults
    if not defaults.is_file():
        raise FileNotFoundError(f"{defaults}: the pipeline's default config; run from a checkout of the repository")
    config = yaml.safe_load(defaults.read_text())
    for path in configfiles:
        config = merge(config, yaml.safe_load(Path(path).read_text()) or {})
    return config
