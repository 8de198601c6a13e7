"""The benchmarks' published judge protocols, read at run time from the user's checkout of their evaluation code.

No prompt of either benchmark is stored in this repository: the prompts come from the checkout that
``evaluation.protocols`` names, and are sent the way the published scorer sends them.

* GEdit-Bench (stepfun-ai/Step1X-Edit, ``GEdit-Bench/viescore``): the prompts are string constants of
  ``viescore/vie_prompts.py``, read with ``ast`` (the user's code is parsed, never run). VIEScore's "tie" task
  joins, with newlines, the no-delimiter context, the two-image edit rule and the SC rule (``<instruction>``
  replaced by the instruction) for SC, and the context and the PQ rule for PQ. Each request is one user turn: the
  text first, then the images as JPEG (PIL's default quality), the source and the edit for SC, the edit alone for
  PQ; the edit is first resized to the source's size. An answer is read as VIEScore reads it (between two
  ``||V^=^V||`` delimiters, else from the first ``{`` to the last ``}``, else a bare ``[a, b]`` or a single
  number; JSON with newlines dropped, then a repair of unquoted keys and a bare score); SC = min of its scores,
  PQ = min of its scores, O = sqrt(SC * PQ). When either answer cannot be read, both are asked once more. Where
  the published code then guesses a random score, the sample here stays unscored.
* ImgEdit-Bench Basic (PKU-YuanGroup/ImgEdit, ``Benchmark/Basic/prompts.json``): one prompt per raw edit type
  with ``<edit_prompt>`` replaced by the instruction; one user turn, the text, then the source image, then the
  edit (as basic_bench.py sends them, whatever the type). The answer's lines "Label: <digits>" are the scores,
  the sample's score their mean rounded to 2 decimals, as step1_get_avgscore.py computes it; an answer with none
  is unscored (the published code asks only once).
"""

from __future__ import annotations

import ast
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .benchmarks import IMGEDIT_ALIASES, IMGEDIT_TYPES
from .judge import ImgEditResult, JudgeResult, ParseFailure

NOT_PUBLISHED = "not the published protocol"

GEDIT_PROMPTS = Path("viescore") / "vie_prompts.py"
GEDIT_PLACES = (Path("GEdit-Bench"), Path("."))  # a Step1X-Edit checkout, or its GEdit-Bench folder
_GEDIT_SC_PARTS = ("_context_no_delimit", "_prompts_0shot_two_image_edit_rule", "_prompts_0shot_tie_rule_SC")
_GEDIT_PQ_PARTS = ("_context_no_delimit", "_prompts_0shot_rule_PQ")
VIESCORE_ROUNDS = 2  # VIEScore.evaluate asks SC and PQ once more when either answer cannot be read
_DELIMITER = "||V^=^V||"

IMGEDIT_PROMPTS = "prompts.json"
IMGEDIT_PLACES = (Path("Benchmark") / "Basic", Path("Basic"), Path("."))  # an ImgEdit checkout, or a folder of it

Chat = Callable[..., str]


class ProtocolLayoutError(ValueError):
    """A checkout that does not hold the published prompt files; the message names the path and what is missing."""


def _find(path: str | Path, name: Path | str, places: tuple[Path, ...], what: str) -> Path:
    root = Path(path).expanduser()
    if root.is_file():
        return root.absolute()
    tried = [root / place / name for place in places]
    for candidate in tried:
        if candidate.is_file():
            return candidate.absolute()
    raise ProtocolLayoutError(f"{root}: not a checkout of {what}: none of {[str(t) for t in tried]} exists")


def find_gedit_prompts(path: str | Path) -> Path:
    """``viescore/vie_prompts.py`` in a Step1X-Edit checkout, its GEdit-Bench folder, or the file itself."""
    return _find(path, GEDIT_PROMPTS, GEDIT_PLACES, "Step1X-Edit's GEdit-Bench (its VIEScore prompts)")


def find_imgedit_prompts(path: str | Path) -> Path:
    """``Benchmark/Basic/prompts.json`` in an ImgEdit checkout, a folder of it, or the file itself."""
    return _find(path, IMGEDIT_PROMPTS, IMGEDIT_PLACES, "ImgEdit (its Benchmark/Basic/prompts.json)")


def protocol_file(set_name: str, path: str | Path) -> Path:
    """The prompt file of a benchmark's published protocol in the user's checkout."""
    finders = {"gedit": find_gedit_prompts, "imgedit": find_imgedit_prompts}
    if set_name not in finders:
        raise ValueError(f"no published protocol for evaluation set {set_name!r}; have {sorted(finders)}")
    return finders[set_name](path)


def _jpeg(image: np.ndarray):
    from ..builder.backends import EncodedImage

    buf = io.BytesIO()
    Image.fromarray(image).convert("RGB").save(buf, format="JPEG")  # PIL's default quality, as VIEScore encodes
    return EncodedImage(buf.getvalue(), "image/jpeg")


def _text_then_images(text: str, n_images: int) -> list[dict]:
    return [{"role": "user", "content": [{"type": "text", "text": text}] + [{"type": "image"}] * n_images}]


def _ask(chat: Chat, messages: list[dict], images: list, attempt: int) -> tuple[str, str | None]:
    try:
        answer = chat(messages, images, attempt) if attempt else chat(messages, images)
    except Exception as e:  # a request that failed after the backend's retries: that round fails, never the batch
        return "", f"judge call failed: {type(e).__name__}: {e}"
    return (answer if isinstance(answer, str) else repr(answer)), None


# ---------------------------------------------------------------- GEdit-Bench (VIEScore)
def _string_constants(path: Path) -> dict[str, str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as e:
        raise ProtocolLayoutError(f"{path}: not readable Python ({e})") from None
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return out


def _number_list(value: object) -> list[float]:
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ParseFailure(f"score {value!r} is not a number or a list of numbers")
    if any(not math.isfinite(v) or v < 0 for v in values):  # sqrt(SC*PQ) needs non-negative finite scores
        raise ParseFailure(f"score {value!r} holds a negative or non-finite number")
    return [float(v) for v in values]


def _repair_viescore_json(text: str) -> str:
    """VIEScore's repair of a near-JSON answer: quote bare keys, and make a bare score number a one-item list."""
    quoted = re.sub(r"([{,]\s*)([A-Za-z_]\w*)\s*:", r'\1"\2":', text)
    return re.sub(r'("score"\s*:\s*)(-?\d+(?:\.\d+)?)', r"\1[\2]", quoted)


def parse_viescore_answer(text: str) -> list[float]:
    """The score list of a VIEScore answer, read the way the published GEdit scorer reads it; ParseFailure if none."""
    if not isinstance(text, str) or not text.strip():
        raise ParseFailure("empty answer")
    if text.count(_DELIMITER) == 2:
        body = text[text.find(_DELIMITER) + len(_DELIMITER) : text.rfind(_DELIMITER)]
    else:
        start, end = text.find("{"), text.rfind("}") + 1
        if start == -1 or end == 0:
            bare = text[text.find("[") : text.rfind("]") + 1] if "[" in text else ""
            if re.fullmatch(r"\[\d+, ?\d+\]", bare):
                return _number_list(json.loads(bare))
            if re.fullmatch(r"\s*[+-]?\d+\s*", text) and 0 <= int(text) <= 10:
                return [float(int(text))]
            raise ParseFailure("no JSON object, no [a, b] list and no single score 0-10 in the answer")
        body = text[start:end]
    body = body.strip().replace("\n", "")
    for candidate in (body, _repair_viescore_json(body)):
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and "score" in data:
            return _number_list(data["score"])
    raise ParseFailure("the answer's JSON has no readable 'score'")


@dataclass(frozen=True)
class GEditProtocol:
    """GEdit-Bench's VIEScore prompts from the user's checkout (``source``), sent and read the published way."""

    sc_prompt: str
    pq_prompt: str
    source: str

    @property
    def label(self) -> str:
        return f"published GEdit-Bench VIEScore protocol (prompts from {self.source})"

    def score(self, chat: Chat, instruction: str, source: np.ndarray, edited: np.ndarray) -> JudgeResult:
        h, w = source.shape[:2]
        if edited.shape[:2] != (h, w):
            edited = np.asarray(Image.fromarray(edited).resize((w, h), Image.Resampling.BICUBIC))
        source_jpeg, edited_jpeg = _jpeg(source), _jpeg(edited)
        sc_messages = _text_then_images(self.sc_prompt.replace("<instruction>", instruction), 2)
        pq_messages = _text_then_images(self.pq_prompt, 1)
        answers: list[str] = []
        reason = ""
        for attempt in range(VIESCORE_ROUNDS):
            sc_text, sc_error = _ask(chat, sc_messages, [source_jpeg, edited_jpeg], attempt)
            pq_text, pq_error = _ask(chat, pq_messages, [edited_jpeg], attempt)
            answers += [sc_text, pq_text]
            try:
                sc_scores = parse_viescore_answer(sc_text) if sc_error is None else None
                pq_scores = parse_viescore_answer(pq_text) if pq_error is None else None
            except ParseFailure as e:
                reason = str(e)
                continue
            if sc_scores is None or pq_scores is None:
                reason = sc_error or pq_error or ""
                continue
            sc, pq = min(sc_scores), min(pq_scores)
            return JudgeResult(sc, pq, math.sqrt(sc * pq), answers, True, None, sc_scores, pq_scores)
        return JudgeResult(None, None, None, answers, False, f"unscored: {reason}")


def load_gedit_protocol(path: str | Path) -> GEditProtocol:
    """The VIEScore prompts of a Step1X-Edit checkout (see the module docstring)."""
    file = find_gedit_prompts(path)
    constants = _string_constants(file)
    missing = [n for n in _GEDIT_SC_PARTS + _GEDIT_PQ_PARTS if n not in constants]
    if missing:
        raise ProtocolLayoutError(f"{file}: no string constant(s) {sorted(set(missing))} (VIEScore's prompts)")
    sc_prompt = "\n".join(constants[n] for n in _GEDIT_SC_PARTS)
    if "<instruction>" not in sc_prompt:
        raise ProtocolLayoutError(f"{file}: the SC prompt has no <instruction> placeholder")
    return GEditProtocol(sc_prompt, "\n".join(constants[n] for n in _GEDIT_PQ_PARTS), str(file))


# ---------------------------------------------------------------- ImgEdit-Bench Basic
def parse_imgedit_answer(text: str) -> list[int]:
    """The scores of an ImgEdit answer, read as the published step1_get_avgscore.py reads them: every line that
    splits on ": " into two parts whose second is all digits; ParseFailure if there is none."""
    if not isinstance(text, str):
        raise ParseFailure("non-text answer")
    scores = []
    for line in text.splitlines():
        parts = line.strip().split(": ")
        if len(parts) == 2 and parts[1].isascii() and parts[1].isdigit():
            scores.append(int(parts[1]))
    if not scores:
        raise ParseFailure("no 'Label: <digits>' line in the answer")
    return scores


@dataclass(frozen=True)
class ImgEditProtocol:
    """ImgEdit-Bench's per-type prompts from the user's checkout (``source``), sent and read the published way."""

    prompts: dict[str, str]
    source: str

    @property
    def label(self) -> str:
        return f"published ImgEdit-Bench protocol (prompts from {self.source})"

    def prompt(self, edit_type: str, instruction: str) -> str:
        """The prompt of a raw edit type ("compose", "alter"... as basic_edit.json names it)."""
        canonical = IMGEDIT_ALIASES.get(edit_type, edit_type)
        names = [edit_type, canonical] + [raw for raw, c in IMGEDIT_ALIASES.items() if c == canonical]
        template = next((self.prompts[n] for n in names if n in self.prompts), None)
        if template is None:
            raise ValueError(f"{self.source}: no prompt for edit type {edit_type!r}; has {sorted(self.prompts)}")
        return template.replace("<edit_prompt>", instruction)

    def score(
        self, chat: Chat, instruction: str, edit_type: str, source: np.ndarray, edited: np.ndarray
    ) -> ImgEditResult:
        messages = _text_then_images(self.prompt(edit_type, instruction), 2)
        answer, error = _ask(chat, messages, [source, edited], 0)
        if error is not None:
            return ImgEditResult(None, None, [answer], False, f"unscored: {error}")
        try:
            scores = parse_imgedit_answer(answer)
        except ParseFailure as e:
            return ImgEditResult(None, None, [answer], False, f"unscored: answer unreadable: {e}")
        return ImgEditResult(round(sum(scores) / len(scores), 2), [float(s) for s in scores], [answer], True)


def load_imgedit_protocol(path: str | Path) -> ImgEditProtocol:
    """The per-type prompts of an ImgEdit checkout (see the module docstring)."""
    file = find_imgedit_prompts(path)
    try:
        prompts = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ProtocolLayoutError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ProtocolLayoutError(f"{file}: expected a JSON object of edit type -> prompt text")
    covered = {IMGEDIT_ALIASES.get(k, k) for k in prompts}
    missing = [t for t in IMGEDIT_TYPES if t not in covered]
    if missing:
        raise ProtocolLayoutError(f"{file}: no prompt for edit type(s) {missing}")
    unplaced = sorted(k for k, v in prompts.items() if "<edit_prompt>" not in v)
    if unplaced:
        raise ProtocolLayoutError(f"{file}: prompt(s) {unplaced} have no <edit_prompt> placeholder")
    return ImgEditProtocol(dict(prompts), str(file))


def load_protocol(set_name: str, path: str | Path | None) -> GEditProtocol | ImgEditProtocol | None:
    """The published protocol of ``set_name`` from the checkout at ``path``; None without a checkout."""
    if not path:
        return None
    loaders = {"gedit": load_gedit_protocol, "imgedit": load_imgedit_protocol}
    if set_name not in loaders:
        raise ValueError(f"no published protocol for evaluation set {set_name!r}; have {sorted(loaders)}")
    return loaders[set_name](path)
