"""Several measurement sets on one scale: per-set calibration, the joint table, and where sets disagree.

Contract:

- Each measurement set (a file, or the calibration store) keeps its own metric; raw scores are never mixed.
  :func:`join` maps a set's score y to the **joint scale** z = (y - lo) / (hi - lo), where [lo, hi] is the
  documented range of the set's metric (:func:`known_scales`: the public sets' and the scorers'
  metrics, clipscore 0-100 and pickscore 0-30), or a range the user gives with
  ``catimg train --scale METRIC=LO:HI``). z is "the share of that metric's range": 0 the worst score the
  metric can give, 1 the best. A metric without a known range is an error
  (:class:`~catimg.errors.MeasurementsError`) rather than a guess from the data.
- Offsets between sets need no calibration: every set's prompts are separate rows of the joint table (a prompt
  in two sets is two rows), and the predictor's per-prompt anchor (the prompt's level over its generators)
  absorbs how hard a set's prompts are, and how lenient its raters. What the sets share is what routing needs:
  how generators compare on a prompt, learned as functions of the prompt's embedding.
- Generators are catalog names: the same name in two sets is the same generator (and settings), which is what
  links the sets (SD 2.1 links GenAI-Bench and TIFA, SDXL links GenAI-Bench and PQPP, SD 1.5 links TIFA and
  AGIQA-3K).
- :func:`compare_sets` reports, for every pair of generators measured together in two or more sets, each set's
  mean difference (on the joint scale, with its standard error) and flags pairs where two sets disagree by
  more than two standard errors; training writes this into the data card and warns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from catimg.errors import MeasurementsError
from catimg.measurements import MeasurementTable

JOINT_METRIC = "joint_quality"
JOINT_SCALE = (0.0, 1.0)
JOINT_DESCRIPTION = (
    "share of each source's metric range (0 = the metric's worst score, 1 = its best); each "
    "source is mapped by its own documented range, never mixed raw"
)


@dataclass(frozen=True)
class SetCalibration:
    """How one set's scores map to the joint scale, and what the set holds."""

    name: str
    metric: str
    lo: float
    hi: float
    n_prompts: int
    n_measured: dict[str, int] = field(default_factory=dict)

    def to_joint(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, float) - self.lo) / (self.hi - self.lo)

    def from_joint(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, float) * (self.hi - self.lo) + self.lo


@dataclass(frozen=True)
class JointTable:
    """The joint table (scores on the joint scale), which set each row comes from, and each set's
    calibration."""

    table: MeasurementTable
    row_set: np.ndarray  # int index into ``sets`` per row of ``table``
    sets: tuple[SetCalibration, ...]

    def rows_of(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.row_set == [s.name for s in self.sets].index(name))

    def n_measured_by_set(self) -> dict[str, dict[str, int]]:
        """generator -> {set name: prompts measured} (sets without the generator left out)."""
        out: dict[str, dict[str, int]] = {}
        for s in self.sets:
            for g, n in s.n_measured.items():
                if n:
                    out.setdefault(g, {})[s.name] = n
        return out


def known_scales() -> dict[str, tuple[float, float]]:
    """Every metric whose range catimg documents: the public data sets' and the scorers' (clipscore,
    pickscore)."""
    from catimg.calibration.scorer import SCORERS
    from catimg.training.sources import METRIC_SCALES

    return {**{name: spec.scale for name, spec in SCORERS.items()}, **METRIC_SCALES}


def metric_range(
    metric: str, where: str, scales: dict[str, tuple[float, float]] | None = None
) -> tuple[float, float]:
    """The documented range of ``metric`` (user-given ``scales`` first); MeasurementsError when there is
    none."""
    known = {**known_scales(), **(scales or {})}
    if metric not in known:
        raise MeasurementsError(
            f'{where}: metric "{metric}" has no known range, so it cannot be put on one scale with '
            f"the other sets; give it with --scale {metric}=LO:HI (its worst and best possible scores) "
            "or train on this set alone"
        )
    lo, hi = known[metric]
    if not hi > lo:
        raise MeasurementsError(
            f'{where}: the range of metric "{metric}" is {lo:g}:{hi:g}; its best must be above its worst'
        )
    return float(lo), float(hi)


def set_name(table: MeasurementTable, fallback: str) -> str:
    """A set's name: its one source (``genai_bench``), else the file's stem, else ``fallback``."""
    if len(table.sources) == 1:
        return table.sources[0]
    return table.path.stem if table.path is not None else fallback


def join(
    tables: Sequence[MeasurementTable],
    names: Sequence[str] | None = None,
    scales: dict[str, tuple[float, float]] | None = None,
) -> JointTable:
    """One table on the joint scale from several sets (rows stacked, generator columns united in first-seen
    order)."""
    names = list(names) if names is not None else [set_name(t, f"set{i + 1}") for i, t in enumerate(tables)]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise MeasurementsError(
            f'two measurement sets are both named "{dup}"; give each file its own source or name'
        )
    cals = []
    for name, t in zip(names, tables, strict=True):
        where = str(t.path or name)
        lo, hi = metric_range(t.metric, where, scales)
        measured = t.n_measured()
        if sum(1 for n in measured.values() if n) < 2:
            only = ", ".join(g for g, n in measured.items() if n) or "none"
            raise MeasurementsError(
                f"{where}: measures one generator only ({only}); it cannot say how generators "
                "compare, so it adds nothing to a router: leave it out or measure a second generator"
            )
        cals.append(SetCalibration(name, t.metric, lo, hi, t.n_prompts, measured))
    gens: dict[str, None] = {}
    for t in tables:
        gens.update(dict.fromkeys(t.generators))
    glist = list(gens)
    n = sum(t.n_prompts for t in tables)
    Y = np.full((n, len(glist)), np.nan)
    C = np.zeros((n, len(glist)), dtype=np.int64)
    row_set = np.zeros(n, dtype=np.int64)
    prompts: list[str] = []
    secs: dict[str, list[float]] = {}
    start = 0
    for k, (t, cal) in enumerate(zip(tables, cals, strict=True)):
        cols = [glist.index(g) for g in t.generators]
        Y[start : start + t.n_prompts, cols] = cal.to_joint(t.Y)
        C[start : start + t.n_prompts, cols] = t.counts
        row_set[start : start + t.n_prompts] = k
        prompts += t.prompts
        for g, s in t.seconds.items():
            if s is not None:
                secs.setdefault(g, []).append(s)
        start += t.n_prompts
    sources = [s for t, name in zip(tables, names, strict=True) for s in (t.sources or [name])]
    table = MeasurementTable(
        prompts=prompts,
        generators=glist,
        Y=Y,
        counts=C,
        seconds={g: (float(np.mean(secs[g])) if g in secs else None) for g in glist},
        metric=JOINT_METRIC,
        sources=list(dict.fromkeys(sources)),
    )
    return JointTable(table, row_set, tuple(cals))


@dataclass(frozen=True)
class PairComparison:
    """How two generators compare in each set that measured both: mean of z_a - z_b, its standard error, n."""

    a: str
    b: str
    by_set: dict[str, tuple[float, float, int]]
    disagree: bool

    def line(self) -> str:
        parts = "; ".join(f"{s}: {m:+.3f} ± {e:.3f} ({n} prompts)" for s, (m, e, n) in self.by_set.items())
        return f"{self.a} - {self.b} on the joint scale: {parts}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["by_set"] = {s: {"mean": m, "se": e, "n": n} for s, (m, e, n) in self.by_set.items()}
        return d


def compare_sets(joint: JointTable) -> list[PairComparison]:
    """Every generator pair measured together in two or more sets; ``disagree`` when two sets' mean
    differences differ by more than two combined standard errors."""
    t = joint.table
    out = []
    for ia in range(len(t.generators)):
        for ib in range(ia + 1, len(t.generators)):
            by_set: dict[str, tuple[float, float, int]] = {}
            for k, cal in enumerate(joint.sets):
                rows = joint.row_set == k
                d = t.Y[rows, ia] - t.Y[rows, ib]
                d = d[~np.isnan(d)]
                if len(d) >= 2:
                    by_set[cal.name] = (float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d))), len(d))
            if len(by_set) < 2:
                continue
            vals = list(by_set.values())
            disagree = any(
                abs(m1 - m2) > 2 * np.hypot(e1, e2)
                for i, (m1, e1, _) in enumerate(vals)
                for (m2, e2, _) in vals[i + 1 :]
            )
            out.append(PairComparison(t.generators[ia], t.generators[ib], by_set, bool(disagree)))
    return out


def parse_scales(values: Sequence[str] | None) -> dict[str, tuple[float, float]]:
    """``--scale METRIC=LO:HI`` values as {metric: (lo, hi)}; InputError naming a malformed one."""
    from catimg.errors import InputError

    out: dict[str, tuple[float, float]] = {}
    for v in values or []:
        name, _, rng = v.partition("=")
        lo_s, _, hi_s = rng.partition(":")
        try:
            lo, hi = float(lo_s), float(hi_s)
        except ValueError:
            raise InputError(f"--scale {v}: expected METRIC=LO:HI, for example clipscore=0:100") from None
        if not name.strip() or not hi > lo:
            raise InputError(
                f"--scale {v}: expected METRIC=LO:HI with HI above LO, for example clipscore=0:100"
            )
        out[name.strip()] = (lo, hi)
    return out
