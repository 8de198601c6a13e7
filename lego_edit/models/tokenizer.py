"""A byte-level BPE tokenizer with the Qwen chat special tokens, trained on the pipeline's own corpus.

The tiny Builder has no pretrained vocabulary, so it gets one trained here. Byte-level BPE with the
ByteLevel pre-tokenizer's regex split kept on: with the split off, BPE memorises whole training strings
and held-out referring expressions fall into pieces never seen in training (VERIFIED.md).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
# Fixed order, so the ids are 0..6 whatever the corpus.
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)

# Qwen2-VL's template, minus the default system prompt (a tiny model has no use for it) and the
# tool-call branches. Content may be a string or a list of parts; an image part is any part of type
# "image" or "image_url", or one carrying an "image" key (the form TRL and `transformers serve` use).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or part['type'] == 'image_url' or 'image' in part -%}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part -%}"
    "{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|im_start|>assistant\\n' }}"
    "{%- endif -%}"
)


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 2, split_spaces: bool = False
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts` and wrap it with Qwen's special tokens and chat template.

    Deterministic: the same texts (in the same order) give a byte-identical ``tokenizer.json``.
    ``vocab_size`` is an upper bound; BPE stops earlier once no pair occurs ``min_frequency`` times.
    ``split_spaces`` makes every space its own token, so a word is the same token after a space (in the
    instruction) and after a quote (the first word of a workflow's string argument): copying a word from the
    instruction into the workflow is then a copy of one token, not a mapping a tiny model has to learn per word.
    """
    n_base = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < n_base:
        raise ValueError(f"vocab_size={vocab_size} is below the {n_base} special and byte tokens; raise it")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Split(" ", behavior="isolated"), byte_level])
        if split_spaces
        else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        # The whole byte alphabet, so any text (a user's instruction in any script) stays encodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The chat scaffolding is in every sequence the model sees, so give its role headers merges too.
    scaffold = [f"{role}\n" for role in ("system", "user", "assistant")] * max(min_frequency, 2)
    tok.train_from_iterator(_chain(texts, scaffold), trainer=trainer)
    return wrap_tokenizer(tok)


def _chain(texts: Iterable[str], extra: list[str]):
    yield from texts
    yield from extra


def wrap_tokenizer(tok: Tokenizer) -> PreTrainedTokenizerFast:
    """Wrap a trained `tokenizers.Tokenizer` as a transformers tokenizer with the chat settings."""
    for t in SPECIAL_TOKENS:
        if tok.token_to_id(t) is None:
            raise ValueError(f"tokenizer lacks the special token {t}")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,  # generation ends at the end of the assistant turn, as in Qwen2.5-VL-Instruct
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        # Generation pads on the left so every row's next token sits in the last column.
        padding_side="left",
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    fast.add_special_tokens({"additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (IM_END, ENDOFTEXT)]})
    fast.chat_template = CHAT_TEMPLATE
    return fast
