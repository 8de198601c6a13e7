"""Bounds that keep untrusted workflows from running away with time or memory."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import LimitExceededError


@dataclass(frozen=True)
class Limits:
    max_steps: int = 16  # steps per workflow
    max_pixels: int = 4096 * 4096  # pixels of any image or mask a step may create
    max_side: int = 8192  # longest side of any image or mask
    max_string_chars: int = 2000  # length of a literal string input

    def check_size(self, height: int, width: int, what: str = "image") -> None:
        """Raise before allocating an image of this size if it breaks a bound."""
        if height < 1 or width < 1:
            raise LimitExceededError(f"{what} would be {width}x{height}, which is empty")
        if height > self.max_side or width > self.max_side or height * width > self.max_pixels:
            raise LimitExceededError(
                f"{what} would be {width}x{height} pixels, above the bound ({self.max_pixels} pixels, "
                f"{self.max_side} per side)"
            )


DEFAULT_LIMITS = Limits()
