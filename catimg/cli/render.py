"""Shared Rich helpers for the CLI: consoles, tables, number formatting."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any

from rich.console import Console
from rich.text import Text


def _width() -> int | None:
    w = os.environ.get("CATIMG_WIDTH")
    return int(w) if w and w.isdigit() else None


def console() -> Console:
    """Console for normal output; ``NO_COLOR`` and ``CATIMG_WIDTH`` pin rendering (used by tests).

    Markup is off: prompts, paths and messages ("[generators.x]", "a sign reading [bold]") print as they are.
    Style a label with :func:`label` instead.
    """
    return Console(width=_width(), no_color=bool(os.environ.get("NO_COLOR")), highlight=False, soft_wrap=False,
                   markup=False)


def error_console() -> Console:
    return Console(stderr=True, width=_width() or 200, no_color=bool(os.environ.get("NO_COLOR")), highlight=False,
                   markup=False)


def label(name: str, style: str, text: str) -> Text:
    """``name`` in ``style``, then ``text`` verbatim (no markup is parsed in ``text``)."""
    return Text.assemble((name, style), " ", text)


def print_json(doc: Any) -> None:
    """Print one JSON document to stdout and nothing else (indented for a terminal, compact for a pipe)."""
    indent = 2 if sys.stdout.isatty() else None
    sys.stdout.write(json.dumps(_finite(doc), indent=indent, ensure_ascii=False, default=_default) + "\n")
    sys.stdout.flush()


def _finite(o: Any) -> Any:
    """NaN and infinities (an unknown cost) become null: JSON has no such numbers."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(o, "__fspath__"):
        return os.fspath(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def fmt_seconds(s: float | None) -> str:
    """The one duration format (catimg.durations): ``-`` for None or NaN (unknown)."""
    from catimg.durations import format_duration

    return format_duration(s)


def fmt_tflops(t: float | None) -> str:
    if t is None or not t > 0:  # NaN fails the test too  # 0: unknown (no FLOP estimate and no explicit cost_tflops)
        return "-"
    return f"{t:.2f}" if t < 10 else f"{t:.0f}"
