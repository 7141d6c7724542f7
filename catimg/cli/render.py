"""Shared Rich helpers for the CLI: consoles, tables that fit any width (:func:`print_table`), header lines
that break between fields (:func:`print_fields`), and the one format for durations (:func:`fmt_seconds`) and
numbers (:func:`fmt_number`, :func:`fmt_fixed`)."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from rich.table import Table


def _width() -> int | None:
    w = os.environ.get("CATIMG_WIDTH")
    return int(w) if w and w.isdigit() else None


def console() -> Console:
    """Console for normal output; ``NO_COLOR`` and ``CATIMG_WIDTH`` pin rendering (used by tests).

    Markup is off: prompts, paths and messages ("[generators.x]", "a sign reading [bold]") print as they are.
    Style a label with :func:`label` instead.
    """
    return Console(
        width=_width(),
        no_color=bool(os.environ.get("NO_COLOR")),
        highlight=False,
        soft_wrap=False,
        markup=False,
    )


def error_console() -> Console:
    return Console(
        stderr=True,
        width=_width() or 200,
        no_color=bool(os.environ.get("NO_COLOR")),
        highlight=False,
        markup=False,
    )


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
    if (
        t is None or not t > 0
    ):  # NaN fails the test too  # 0: unknown (no FLOP estimate and no explicit cost_tflops)
        return "-"
    return fmt_number(t)


def fmt_number(x: float | None, sig: int = 3, signed: bool = False) -> str:
    """The one format for plain numbers in tables (TFLOPs, quality, values, margins, seconds per image):
    at most ``sig`` significant digits in fixed point (no trailing zeros), never scientific notation, never
    ``-0``; thousands separated. ``0.0796137728`` -> ``0.0796``, ``17213.4`` -> ``17,213``, ``7.5`` ->
    ``7.5``, ``0.000412`` -> ``0.000412``;
    ``-`` for None or NaN. ``signed`` writes ``+`` on positive values.
    """
    if x is None or x != x:
        return "-"
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if x == 0:
        return "0"
    exponent = math.floor(math.log10(abs(x)))
    decimals = min(max(0, sig - 1 - exponent), 9)  # below 1e-9 is 0
    text = f"{x:{'+' if signed else ''},.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if float(text.replace(",", "")) == 0:  # rounds to zero: no "-0.000"
        return "0"
    return text


def fmt_fixed(x: float | None, decimals: int, signed: bool = False) -> str:
    """``x`` with a fixed number of decimals (quality scores, values in one column line up) and never
    ``-0.000``."""
    if x is None or x != x:
        return "-"
    text = f"{x:{'+' if signed else ''}.{decimals}f}"
    if float(text) == 0:
        return f"{0:.{decimals}f}"
    return text


def print_fields(con: Console, fields: list[str], sep: str = "   ") -> None:
    """Print ``fields`` ("device: ...", "budget: ...") on as few lines as fit the console, breaking only
    between fields: a header line never wraps in the middle of one (a field longer than the console still
    wraps)."""
    line = ""
    for field in (f for f in fields if f):
        if line and len(line) + len(sep) + len(field) > con.width:
            con.print(line, soft_wrap=True)
            line = field
        else:
            line = f"{line}{sep}{field}" if line else field
    if line:
        con.print(line, soft_wrap=True)


def print_table(
    con: Console,
    table: Table,
    drop: tuple[str, ...] = (),
    wrap: tuple[str, ...] = (),
    what: str = "columns",
    below: tuple[str, ...] = (),
) -> list[str]:
    """Print ``table`` so that it fits the console without cutting a cell: every column keeps its cells whole
    (``no_wrap``) except the ``wrap`` ones, which may wrap between words; while the table is still too wide
    the ``drop`` columns are removed, in that order; if even that is not enough, cells fold onto more lines.
    Returns the headers of the columns removed and says which below the table, except the ``below`` ones (the
    caller lists their content under the table).
    """
    for column in table.columns:
        if str(column.header) not in wrap:
            column.no_wrap = True
    dropped: list[str] = []
    for header in drop:
        if table_min_width(con, table) <= con.width:
            break
        for i, column in enumerate(table.columns):
            if str(column.header) == header:
                del table.columns[i]
                for j, rest in enumerate(table.columns):  # Rich pads the first and last column by their index
                    rest._index = j
                dropped.append(header)
                break
    if table_min_width(con, table) > con.width:  # still too wide: fold cells onto more lines, never cut them
        for column in table.columns:
            column.no_wrap, column.overflow = False, "fold"
    con.print(table)
    hidden = [h for h in dropped if h not in below]
    if hidden:
        con.print(
            f"({', '.join(hidden)} not shown at this width; a wider terminal or --json shows all {what})"
        )
    return dropped


def table_min_width(con: Console, table: Table) -> int:
    """The narrowest ``table`` can be without cutting a cell: whole cells in ``no_wrap`` columns, the longest
    word in the others, plus padding and rules. (Rich's own measurement ignores ``no_wrap``.)"""
    options = con.options
    total = 0
    for column in table.columns:
        m = table._measure_column(con, options, column)
        total += m.maximum if column.no_wrap else m.minimum
    return total + table._extra_width


def fmt_value(v: Any) -> str:
    """A metadata value for people (``inspect``): floats by :func:`fmt_number` with 6 significant digits (no
    ``0.07961377280000001``), lists and mappings item by item, None as ``-``."""
    if v is None:
        return "-"
    if isinstance(v, bool) or isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return fmt_number(v, sig=6)
    if isinstance(v, dict):
        return ", ".join(f"{k}: {fmt_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_value(x) for x in v)
    return str(v)
