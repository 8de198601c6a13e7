"""Adapter files written the same way every time, so that two runs of one config can be compared by checksum.

peft and diffusers keep a LoRA's ``target_modules`` (and ``modules_to_save``) as Python sets and write them as
JSON lists in set order, which follows the process's string-hash seed: two runs give equal tensors but different
bytes in ``adapter_config.json`` and in the ``.safetensors`` header's adapter metadata, and safetensors itself
writes a header with several metadata entries in hash order. ``stabilise_adapter`` rewrites both with those lists
sorted (their order carries no meaning) and the JSON keys sorted.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..imageio import atomic_write_bytes, atomic_write_text

SET_VALUED = ("target_modules", "modules_to_save", "exclude_modules")


def _canonical(value):
    if isinstance(value, dict):
        return {
            k: sorted(v)
            if k in SET_VALUED and isinstance(v, list) and all(isinstance(x, str) for x in v)
            else _canonical(v)
            for k, v in value.items()
        }
    return value


def _stable_json_text(text: str) -> str | None:
    """The JSON object ``text`` with set-valued lists and keys sorted; None when ``text`` is no JSON object."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return json.dumps(_canonical(data), indent=2, sort_keys=True) if isinstance(data, dict) else None


def canonical_safetensors(data: bytes) -> bytes:
    """The same file with its JSON header in sorted key order. safetensors writes the header's metadata map in hash
    order, which changes from process to process; the tensor bytes and their offsets stay as they are."""
    import struct

    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = {k: _stable_json_text(v) or v for k, v in header["__metadata__"].items()}
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(text)) + text + data[8 + n :]


def stabilise_safetensors(path: str | Path) -> None:
    """Rewrite a ``.safetensors`` file canonically: metadata JSON values with set-valued lists sorted, the header in
    sorted key order (the tensors are copied unchanged)."""
    data = Path(path).read_bytes()
    stable = canonical_safetensors(data)
    if stable != data:
        atomic_write_bytes(path, stable)


def stabilise_adapter(folder: str | Path) -> None:
    """Every adapter file in ``folder``: the ``*.json`` configs and the ``*.safetensors`` headers."""
    for path in sorted(Path(folder).glob("*.json")):
        text = path.read_text()
        if "target_modules" in text:
            stable = _stable_json_text(text)
            if stable is not None and stable != text:
                atomic_write_text(path, stable)
    for path in sorted(Path(folder).glob("*.safetensors")):
        stabilise_safetensors(path)
