"""argparse types shared by the harness's commands."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    """A whole number >= 1 (sizes, counts, strides), refused by argparse otherwise."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be an integer of at least 1")
    return value


def seconds(text: str) -> float:
    """A finite number of seconds >= 0, refused by argparse otherwise."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number of seconds >= 0")
    return value
