"""Glue for the thin workflow scripts: build a stage's config dataclass from rule params, and send a
job's output to its log file. Takes plain values; never imports Snakemake."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def config_from(cls: type[T], values: dict[str, Any] | None = None, **overrides) -> T:
    """``cls(**values, **overrides)`` for a (nested) config dataclass: a dict given for a dataclass field becomes
    that dataclass; keys the dataclass does not have raise ValueError naming them (a typo is an error). The one
    dict-to-config helper of the rules' scripts and the stages' command lines."""
    values = {**(values or {}), **overrides}
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no option(s) {', '.join(unknown)}; it has {', '.join(sorted(names))}")
    hints = typing.get_type_hints(cls)
    clean = {}
    for key, value in values.items():
        hint = hints.get(key)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from(hint, value)
        elif typing.get_origin(hint) in (list, tuple) and value is not None and not isinstance(value, str):
            value = list(value)  # snakemake params may hand over tuples or Namedlists
        clean[key] = value
    return cls(**clean)


def sort_keys_in_place(config: dict) -> dict:
    """Order every mapping in ``config`` by key, in place (lists keep their order), and return it.

    Snakemake decides whether params changed by comparing their ``repr``, and a dict's repr follows insertion
    order; without this, reordering the keys of a config file, or writing out a default that schema validation
    had filled in, would rerun every job whose params are a config section, though no value changed.

    >>> sort_keys_in_place({"b": 1, "a": {"d": [3, 1], "c": 2}})
    {'a': {'c': 2, 'd': [3, 1]}, 'b': 1}
    """
    items = sorted(config.items())
    config.clear()
    for key, value in items:
        config[key] = sort_keys_in_place(value) if isinstance(value, dict) else value
    return config


@contextlib.contextmanager
def logging_to(path: str | Path | None) -> Iterator[None]:
    """Send stdout, stderr (progress bars included) and logging to ``path`` for the duration."""
    if path is None:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as f:
        old = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = f
        root = logging.getLogger()
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        level = root.level
        root.setLevel(logging.INFO)
        try:
            yield
        except BaseException:
            logging.getLogger("lego_edit").exception("job failed")
            raise
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
            sys.stdout, sys.stderr = old
