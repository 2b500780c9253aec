"""Argument types shared by the ``hookline`` subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def at_least_one(what: str) -> Callable[[str], int]:
    """An argparse ``type``: a whole number of ``what`` (``"process"``, ``"run"``), one or more; anything
    else is refused with the reason (argparse prints it after the option's name)."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if n < 1:
            raise argparse.ArgumentTypeError(f"{n} is fewer than one {what}")
        return n

    return parse
