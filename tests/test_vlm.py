"""The tokenizer, the tiny Qwen2.5-VL and its generation helpers (CPU, seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from openai_server import EXAMPLES, TINY, overfit_vlm, solid

from lego_edit.models import vlm
from lego_edit.models.tokenizer import SPECIAL_TOKENS, train_tokenizer

CORPUS = [
    f"remove the {c} {s} on the {p}"
    for c in ("red", "blue", "green")
    for s in ("circle", "square")
    for p in ("left", "right")
] + ['{"step":1,"model":"RES"}', "yes", "no"] * 3


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=500)


@pytest.fixture(scope="module")
def random_vlm(tok):
    return vlm.build_tiny_vlm(TINY, tok)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny VLM overfit on two image/answer pairs, and where it was saved."""
    out = tmp_path_factory.mktemp("trained") / "model"
    model, processor = overfit_vlm(EXAMPLES, out)
    return model, processor, out


# Prompts of different lengths and image counts, so left padding is exercised.
MIXED = [
    (vlm.chat("remove the red circle", 1), [solid((200, 0, 0))]),
    (vlm.chat("hi", 0, system="you are a builder"), []),
    (vlm.chat("compare them", 2), [solid((0, 0, 200)), solid((0, 200, 0), box=(0, 8, 0, 8))]),
    (vlm.chat("remove the blue square on the left, please", 0), []),
]


def test_tokenizer_is_deterministic(tok, tmp_path):
    again = train_tokenizer(CORPUS, vocab_size=500)
    tok.save_pretrained(tmp_path / "a")
    again.save_pretrained(tmp_path / "b")
    assert (tmp_path / "a/tokenizer.json").read_bytes() == (tmp_path / "b/tokenizer.json").read_bytes()


def test_tokenizer_specials_and_bytes(tok):
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.padding_side == "left"
    text = "Entferne den grünen Kreis 🟢 — 去掉"  # never seen: byte-level BPE still round-trips it
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode("<|im_start|><|image_pad|>")) == 2


def test_chat_template(tok):
    msgs = [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "image_url", "image_url": {"url": "x"}},
                {"type": "text", "text": "edit"},
            ],
        },
        {"role": "assistant", "content": "ok"},
    ]
    assert tok.apply_chat_template(msgs, tokenize=False) == (
        "<|im_start|>system\nsys<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
        "<|vision_start|><|image_pad|><|vision_end|>edit<|im_end|>\n"
        "<|im_start|>assistant\nok<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("edit<|im_end|>\n<|im_start|>assistant\n")
    # A string and a list of text parts render alike (`transformers serve` sends the list form).
    as_parts = vlm.chat("hi", 0, system="sys")
    as_str = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(as_parts, tokenize=False) == tok.apply_chat_template(as_str, tokenize=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 100}, "multiple of 28"),
        ({"hidden_size": 48, "num_heads": 4}, "head_dim"),
        ({"num_heads": 4, "num_kv_heads": 3}, "num_kv_heads"),
        ({"vision_hidden_size": 60}, "vision_hidden_size"),
        ({"dtype": "int8"}, "dtype"),
    ],
)
def test_config_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vlm.VLMConfig(**kwargs)


def test_mrope_section_sums_to_half_head_dim():
    for hidden, heads in ((64, 4), (128, 4), (128, 2), (3584, 28)):
        cfg = vlm.VLMConfig(hidden_size=hidden, num_heads=heads, num_kv_heads=1)
        assert sum(cfg.mrope_section) == cfg.head_dim // 2
    assert vlm.VLMConfig(hidden_size=3584, num_heads=28, num_kv_heads=4).mrope_section == [16, 24, 24]


def test_build_is_seeded(tok):
    state = torch.random.get_rng_state()
    a, _ = vlm.build_tiny_vlm(TINY, tok)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    b, _ = vlm.build_tiny_vlm(TINY, tok)
    c, _ = vlm.build_tiny_vlm(vlm.VLMConfig(**{**vlm.config_dict(TINY), "seed": 1}), tok)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    cfg = a.config
    assert cfg.image_token_id == cfg.text_config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert a.generation_config.eos_token_id == tok.eos_token_id


def test_image_is_16_tokens(random_vlm):
    _, processor = random_vlm
    enc = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[vlm.to_pil(solid((1, 2, 3)))])
    assert enc["input_ids"][0].count(processor.image_token_id) == 16
    assert enc["image_grid_thw"].tolist() == [[1, 8, 8]]


def test_batched_generation_equals_single(random_vlm):
    model, processor = random_vlm
    msgs, imgs = [m for m, _ in MIXED], [i for _, i in MIXED]
    batched = vlm.generate(model, processor, msgs, imgs, max_new_tokens=16, batch_size=16)
    pairs = vlm.generate(model, processor, msgs, imgs, max_new_tokens=16, batch_size=2)
    single = [vlm.generate(model, processor, [m], [i], max_new_tokens=16)[0] for m, i in MIXED]
    assert all(batched) and batched == single == pairs


def test_sampling_is_seeded(random_vlm):
    model, processor = random_vlm
    msgs, imgs = [m for m, _ in MIXED], [i for _, i in MIXED]
    run = lambda seed: vlm.generate(model, processor, msgs, imgs, max_new_tokens=16, do_sample=True, seed=seed)
    assert run(3) == run(3) != run(4)


def test_image_count_must_match(random_vlm):
    model, processor = random_vlm
    with pytest.raises(ValueError, match="1 image placeholders but 0 images"):
        vlm.generate(model, processor, [vlm.chat("x", 1)], [[]])


def test_score_choices(random_vlm, tok):
    model, processor = random_vlm
    msgs, imgs = [m for m, _ in MIXED], [i for _, i in MIXED]
    batched = vlm.score_choices(model, processor, msgs, imgs)
    single = [vlm.score_choices(model, processor, [m], [i])[0] for m, i in MIXED]
    for b, s in zip(batched, single):
        assert set(b) == {"yes", "no"} and 0 < b["yes"] < 1
        assert b == pytest.approx(s, rel=1e-4)
    norm = vlm.score_choices(model, processor, msgs, imgs, normalize=True)
    assert all(sum(p.values()) == pytest.approx(1.0) for p in norm)
    with pytest.raises(ValueError, match="single tokens"):
        vlm.score_choices(model, processor, msgs[:1], imgs[:1], choices=("definitely", "no"))


def test_training_makes_the_image_matter(trained):
    model, processor, _ = trained
    msgs = [vlm.chat(text, 1) for _, text, _ in EXAMPLES]
    out = vlm.generate(model, processor, msgs, [imgs for imgs, _, _ in EXAMPLES], max_new_tokens=30)
    assert out == [ans for _, _, ans in EXAMPLES]  # same text, different image, different answer
    assert all(json.loads(o) for o in out)


def test_save_and_reload_gives_same_output(trained):
    model, processor, path = trained
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    reloaded, reprocessor = vlm.load_vlm(path, device="cpu")
    msgs = [m for m, _ in MIXED] + [vlm.chat(t, 1) for _, t, _ in EXAMPLES]
    imgs = [i for _, i in MIXED] + [i for i, _, _ in EXAMPLES]
    assert vlm.generate(model, processor, msgs, imgs, max_new_tokens=20) == vlm.generate(
        reloaded, reprocessor, msgs, imgs, max_new_tokens=20
    )


def test_lora_adapter_round_trip(trained, tmp_path):
    peft = pytest.importorskip("peft")
    _, _, base_dir = trained
    model, processor = vlm.load_vlm(base_dir, device="cpu")
    # init_lora_weights=False: random A and B, so the adapter really changes the output.
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = peft.get_peft_model(model, lora).eval()
    peft_model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter/adapter_model.safetensors").is_file()
    loaded, _ = vlm.load_vlm(base_dir, device="cpu", adapter=tmp_path / "adapter")
    base, _ = vlm.load_vlm(base_dir, device="cpu")
    msgs, imgs = [m for m, _ in MIXED], [i for _, i in MIXED]
    enc = vlm._encode(processor, msgs, imgs, "cpu")
    with torch.inference_mode():
        want, got, plain = (m(**enc).logits for m in (peft_model, loaded, base))
    assert torch.equal(want, got) and not torch.allclose(want, plain)
    assert vlm.generate(peft_model, processor, msgs, imgs, max_new_tokens=12) == vlm.generate(
        loaded, processor, msgs, imgs, max_new_tokens=12
    )


def test_numpy_and_pil_inputs_agree(random_vlm):
    model, processor = random_vlm
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    m = [vlm.chat("x", 1)]
    assert vlm.generate(model, processor, m, [[img]], max_new_tokens=8) == vlm.generate(
        model, processor, m, [[vlm.to_pil(img)]], max_new_tokens=8
    )


def test_init_vlm_builds_or_loads(trained, tok):
    _, _, path = trained
    with pytest.raises(ValueError, match="tokenizer"):
        vlm.init_vlm(vlm.VLMConfig())
    model, _ = vlm.init_vlm(TINY, tok, device="cpu")
    assert vlm.param_count(model) > 0
    # A checkpoint given as `base` gets the configured image size: 56 px -> 4 image tokens.
    _, processor = vlm.init_vlm(vlm.VLMConfig(base=str(path), image_size=56), device="cpu")
    enc = vlm._encode(processor, [vlm.chat("x", 1)], [[solid((9, 9, 9))]], "cpu")
    assert int((enc["input_ids"] == processor.image_token_id).sum()) == 4
