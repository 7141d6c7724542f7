"""The one duration format of catimg: how seconds are written for people (tables, notes, error messages).

``format_duration`` writes ``350 ms``, ``2.5 s``, ``105.5 s``, ``1.8 min``, ``2.0 h``: each reads back through
``catimg.routing.budget.parse_duration`` (so a value from a message can be passed to
``--budget``/``--total-budget``). With ``round_up=True`` the shown value is never below the true one (for
"the smallest budget that works").
"""

from __future__ import annotations

import math


def format_duration(seconds: float | None, round_up: bool = False) -> str:
    """Seconds for people; ``-`` for None or NaN (unknown)."""
    if seconds is None or seconds != seconds:
        return "-"
    s = float(seconds)
    rnd = _ceil if round_up else round
    if s < 1:
        ms = rnd(s * 1000, 0)
        if ms < 1000:
            return f"{ms:.0f} ms"
        s = 1.0
    if s < 120:
        return f"{rnd(s, 1):.1f} s"
    if s < 7200:
        return f"{rnd(s / 60, 1):.1f} min"
    return f"{rnd(s / 3600, 1):.1f} h"


def _ceil(x: float, digits: int) -> float:
    f = 10.0**digits
    return math.ceil(x * f - 1e-9) / f
