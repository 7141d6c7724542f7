"""What a generator costs on this device: seconds per image, TFLOPs per image, load time, memory.

**The one rule** (explain, gen, plan, models and eval all route by it, through :func:`routing_costs`). The
seconds that route a generator are, in this order, the first that exists:

1. **explicit**: ``cost_seconds`` from ``models.toml`` (the user knows best);
2. **measured**: a measurement on this device class, dtype and these exact settings in the cost cache
   (``catimg.costs.bench``: filled by ``catimg bench`` and by every ``catimg gen`` run, which records what it
   made);
3. **router data**: the seconds per image the router was trained with (a router trained on measurements with a
   ``seconds`` column), for a generator the router knows with unchanged settings. The router does not record
   on which device those seconds were measured: they are taken as this device's until a measurement exists;
4. **estimated**: analytic TFLOPs (``catimg.flops``) divided by a throughput for the device class (the table
   in :data:`DEVICE_THROUGHPUT`), plus a per-kernel launch overhead.

Each :class:`Cost` says which (``kind``; ``COST_SOURCES`` names it for people). An explicit cost and the
router's seconds are given for the catalog's settings: when a run changes them (``gen --width/--height``) they
are rescaled by the ratio of the FLOP estimates (the note says so); a generator with no FLOP estimate keeps
them unscaled (and the note says that too). ``cost_tflops`` is rescaled the same way. A measurement is per
settings, so a resized run misses it (and its images then measure the new size). When estimates drive routing,
:func:`estimate_notice` is the one line the CLI prints about ``catimg bench``.

Memory feasibility: the peak memory is estimated as the weights at the chosen dtype plus the activations of
the largest step (denoiser pass or VAE decode). A generator whose peak does not fit the GPU is planned with
model CPU offload when its largest single component plus activations fits (cost raised by the time to move
every component's weights over PCIe once per image); otherwise it is infeasible (``feasible=False``). The note
says why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol

from catimg.config import Catalog, Generator
from catimg.device import DeviceInfo, default_dtype, device_class, dtype_bytes
from catimg.errors import ConfigError

if TYPE_CHECKING:
    from catimg.costs.bench import BenchResult
    from catimg.flops import FlopEstimate

CostKind = Literal["explicit", "measured", "router", "estimated", "unknown"]
#: How each kind is named to a person (tables, --json ``cost_source``).
COST_SOURCES: dict[str, str] = {
    "explicit": "explicit",
    "measured": "measured",
    "router": "router data",
    "estimated": "estimated",
    "unknown": "unknown",
}


@dataclass(frozen=True)
class Cost:
    """The cost of one image from one generator on one device."""

    seconds: float  # seconds per image once the pipeline is loaded
    tflops: float  # TFLOPs per image (analytic count or explicit)
    kind: CostKind
    load_seconds: float  # one-off time to load the pipeline (counted once per model in a batch plan)
    peak_memory_gb: float | None
    offload: bool = False
    feasible: bool = True
    note: str = ""

    @property
    def source(self) -> str:
        """Where the seconds come from, for people: explicit, measured, router data, estimated or unknown."""
        return COST_SOURCES.get(self.kind, self.kind)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "source": self.source}


class TrainedRouter(Protocol):
    """What the cost rule asks of a router (:class:`catimg.routing.router.Router`, a later stage, satisfies
    it)."""

    @property
    def generators(self) -> list[str]: ...

    @property
    def cost_unit(self) -> str: ...

    def knows(self, gen: Generator) -> bool: ...

    def mismatch(self, gen: Generator) -> str | None: ...

    def trained_seconds(self, gen: Generator) -> float | None: ...


# ------------------------------------------------------------------------------------------ device throughput


@dataclass(frozen=True)
class Throughput:
    """How fast a device class runs diffusion models (numbers documented in README, "Cost model")."""

    pattern: str  # regex matched against the lower-cased device name
    label: str
    peak_tflops: float  # dense fp16/bf16 tensor-core peak (fp32 accumulate) from the vendor's data sheet
    efficiency: float  # share of the peak a diffusers UNet/DiT step reaches in practice
    launch_ms: float  # overhead per kernel launch / op dispatch in milliseconds
    bandwidth_gbs: float  # host->device bandwidth used for CPU offload (PCIe / unified memory)
    disk_gbs: float = 1.5  # weights read + init throughput while loading a pipeline

    @property
    def effective_tflops(self) -> float:
        return self.peak_tflops * self.efficiency


#: Effective throughput = peak × efficiency. Peaks are the vendors' dense fp16 tensor numbers (fp32
#: accumulate); the efficiency 0.2-0.4 is what diffusers pipelines reach in fp16/bf16 at 512-1024 px (SDXL
#: 1024² with guidance, 13.5 TFLOPs a step, runs at about 14-16 steps/s on an H100, 7 on an A100, 3 on an RTX
#: 4090). Order matters: the first pattern that matches wins.
DEVICE_THROUGHPUT: tuple[Throughput, ...] = (
    Throughput(r"h200", "H200", 989.0, 0.22, 0.006, 55.0, 3.0),
    Throughput(r"h100.*pcie", "H100 PCIe", 756.0, 0.24, 0.006, 55.0, 3.0),
    Throughput(r"h100|gh200", "H100 SXM", 989.0, 0.22, 0.006, 55.0, 3.0),
    Throughput(r"a100", "A100", 312.0, 0.32, 0.007, 25.0, 2.5),
    Throughput(r"l40s", "L40S", 362.0, 0.28, 0.007, 25.0, 2.5),
    Throughput(r"l40\b|l40$", "L40", 181.0, 0.35, 0.007, 25.0, 2.5),
    Throughput(r"\bl4\b|l4$", "L4", 121.0, 0.28, 0.008, 25.0, 2.0),
    Throughput(r"a10g", "A10G", 70.0, 0.40, 0.008, 25.0, 2.0),
    Throughput(r"\ba10\b|a10$", "A10", 125.0, 0.32, 0.008, 25.0, 2.0),
    Throughput(r"4090", "RTX 4090", 165.0, 0.35, 0.006, 25.0, 2.5),
    Throughput(r"4080", "RTX 4080", 97.5, 0.38, 0.006, 25.0, 2.5),
    Throughput(r"4070", "RTX 4070", 58.0, 0.40, 0.007, 25.0, 2.0),
    Throughput(r"4060", "RTX 4060", 30.0, 0.40, 0.007, 12.0, 1.5),
    Throughput(r"3090", "RTX 3090", 71.0, 0.45, 0.007, 25.0, 2.0),
    Throughput(r"3080", "RTX 3080", 59.5, 0.45, 0.007, 25.0, 2.0),
    Throughput(r"3070", "RTX 3070", 40.6, 0.45, 0.008, 25.0, 1.5),
    Throughput(r"3060", "RTX 3060", 25.6, 0.45, 0.008, 25.0, 1.5),
    Throughput(r"a6000", "RTX A6000", 155.0, 0.32, 0.007, 25.0, 2.0),
    Throughput(r"v100", "V100", 125.0, 0.28, 0.010, 12.0, 1.5),
    Throughput(r"\bt4\b|t4$", "T4", 65.0, 0.22, 0.012, 12.0, 1.0),
    # Apple silicon through MPS: fp16 GPU peak, unified memory (no offload copy to speak of).
    Throughput(r"m[1-4] ultra", "Apple M-series Ultra", 42.0, 0.30, 0.020, 400.0, 3.0),
    Throughput(r"m[1-4] max", "Apple M-series Max", 27.0, 0.30, 0.020, 300.0, 3.0),
    Throughput(r"m[1-4] pro", "Apple M-series Pro", 13.0, 0.30, 0.020, 150.0, 2.5),
    Throughput(r"apple|m[1-4]", "Apple M-series", 7.0, 0.30, 0.020, 100.0, 2.0),
)
#: Fallbacks when no pattern matches.
GENERIC_CUDA = Throughput(r".*", "unknown CUDA GPU", 60.0, 0.35, 0.008, 12.0, 1.5)
GENERIC_MPS = Throughput(r".*", "unknown Apple GPU", 7.0, 0.30, 0.020, 100.0, 2.0)
#: CPU: fp32 matrix throughput per core (AVX2/AVX-512 FMA, what torch reaches on conv/matmul-heavy models) and
#: the per-op dispatch overhead of eager PyTorch.
CPU_GFLOPS_PER_CORE = 40.0
CPU_EFFICIENCY = 0.5
CPU_LAUNCH_MS = 0.012


def device_throughput(device: DeviceInfo) -> Throughput:
    """The throughput row for ``device`` (CPU: built from its core count)."""
    name = device.name.lower()
    if device.kind == "cpu":
        import os

        cores = os.cpu_count() or 1
        return Throughput(
            r".*",
            f"CPU ({cores} cores)",
            CPU_GFLOPS_PER_CORE * cores / 1000.0,
            CPU_EFFICIENCY,
            CPU_LAUNCH_MS,
            1000.0,
            1.0,
        )
    for row in DEVICE_THROUGHPUT:
        if re.search(row.pattern, name):
            return row
    return GENERIC_MPS if device.kind == "mps" else GENERIC_CUDA


# ------------------------------------------------------------------------------------------ costs


def generator_cost(
    gen: Generator,
    device: DeviceInfo,
    use_measured: bool = True,
    batch: int = 1,
    router_seconds: float | None = None,
    base: Generator | None = None,
) -> Cost:
    """The cost of one image from ``gen`` on ``device`` by the one rule of the module doc.

    ``gen`` carries the settings the run will use (size and dtype overrides applied) and ``base`` is its
    catalog entry when they differ: an explicit cost or the router's seconds (both given for the catalog
    settings) are then rescaled by the ratio of the FLOP estimates. ``router_seconds``: the seconds per image
    the router was trained with for this generator (None when it has none). ``batch`` images per pipeline call
    share the per-op launch overhead of an estimate.
    """
    from catimg.flops import estimate_flops

    dtype = default_dtype(device, gen.dtype)
    try:
        est = estimate_flops(gen)
    except ConfigError as exc:
        return _cost_without_estimate(gen, exc, router_seconds, base)
    scale, scaled_note = _flops_scale(est.total_tflops, gen, base)
    tflops = gen.cost_tflops * scale if gen.cost_tflops is not None else est.total_tflops
    tp = device_throughput(device)
    seconds = estimated_seconds(
        est,
        tp,
        tflops_override=tflops if gen.cost_tflops is not None else None,
        device=device,
        dtype=dtype,
        batch=batch,
    )
    weights_gb = est.weights_gb(dtype)
    load_seconds = weights_gb / tp.disk_gbs + 1.0  # + pipeline construction
    peak = est.peak_memory_gb(dtype)
    kind: CostKind = "estimated"
    notes: list[str] = [f"estimated from {est.total_tflops:.3g} TFLOPs on {tp.label}"]
    if gen.cost_tflops is not None:
        notes[0] = f"estimated from explicit cost_tflops = {gen.cost_tflops:g}{scaled_note} on {tp.label}"
    m = _measured(gen, device) if use_measured else None
    if m is not None:  # its load time and peak memory count even under an explicit cost_seconds
        load_seconds = m.load_seconds
        peak = m.peak_memory_gb if m.peak_memory_gb is not None else peak
    if m is not None and gen.cost_seconds is None:
        seconds, kind = m.seconds_per_image(gen.steps), "measured"
        reused = f", {m.note}" if m.note.startswith("from the measurement of") else ""  # another step count
        notes = [f"measured by {m.source} on {m.measured_at[:10]}{reused}"]
    elif router_seconds is not None and gen.cost_seconds is None:
        seconds, kind = router_seconds * scale, "router"
        notes = [
            f"seconds per image the router was trained with{scaled_note} (the measurements' seconds column; "
            "`catimg bench` measures this device)"
        ]
    seconds, offload, feasible, mem_notes = _fit_memory(seconds, est, dtype, weights_gb, peak, device, tp)
    notes += mem_notes
    if gen.cost_seconds is not None:
        seconds, kind = gen.cost_seconds * scale, "explicit"
        notes[0] = f"explicit cost_seconds = {gen.cost_seconds:g} from models.toml{scaled_note}"
    return Cost(
        seconds=float(seconds),
        tflops=float(tflops),
        kind=kind,
        load_seconds=float(load_seconds),
        peak_memory_gb=None if peak is None else round(float(peak), 2),
        offload=offload,
        feasible=feasible,
        note="; ".join(notes),
    )


def _measured(gen: Generator, device: DeviceInfo) -> BenchResult | None:
    from catimg.costs.bench import lookup

    return lookup(gen, device)


def _flops_scale(run_tflops: float, gen: Generator, base: Generator | None) -> tuple[float, str]:
    """(ratio of the run's FLOPs to the catalog entry's, a note) when the run changes the size or steps."""
    if base is None or base.settings_hash() == gen.settings_hash():
        return 1.0, ""
    from catimg.flops import estimate_flops

    try:
        base_tflops = estimate_flops(base).total_tflops
    except ConfigError:
        return 1.0, ""
    if not base_tflops > 0:
        return 1.0, ""
    ratio = run_tflops / base_tflops
    return ratio, (
        f" for {base.width}x{base.height}, scaled by FLOPs to {gen.width}x{gen.height} (x{ratio:.3g})"
    )


def _cost_without_estimate(
    gen: Generator, exc: ConfigError, router_seconds: float | None, base: Generator | None
) -> Cost:
    """An explicit cost, else the router's seconds, for a generator with no FLOP estimate; else the
    ConfigError."""
    resized = base is not None and base.settings_hash() != gen.settings_hash()
    caveat = "; not rescaled for the run's size (no FLOP estimate)" if resized else ""
    tflops = gen.cost_tflops if gen.cost_tflops is not None else 0.0
    if gen.cost_seconds is not None:
        return Cost(
            seconds=gen.cost_seconds,
            tflops=tflops,
            kind="explicit",
            load_seconds=0.0,
            peak_memory_gb=None,
            note=f"explicit cost_seconds from models.toml; no FLOP estimate ({exc}){caveat}",
        )
    if router_seconds is not None:
        return Cost(
            seconds=float(router_seconds),
            tflops=float(tflops),
            kind="router",
            load_seconds=0.0,
            peak_memory_gb=None,
            note=f'seconds per image the router was trained with; no FLOP estimate for source "{gen.source}" '
            f'(family "{gen.family}"), so TFLOPs are unknown (give cost_tflops in models.toml){caveat}',
        )
    raise ConfigError(
        f"{exc}; give cost_seconds (and optionally cost_tflops) for [generators.{gen.model}] in models.toml"
    ) from exc


def _fit_memory(
    seconds: float,
    est: FlopEstimate,
    dtype: str,
    weights_gb: float,
    peak: float | None,
    device: DeviceInfo,
    tp: Throughput,
) -> tuple[float, bool, bool, list[str]]:
    """(seconds, offload, feasible, notes): plan CPU offload, or mark infeasible, when the peak exceeds the
    GPU."""
    if not (device.is_gpu and device.total_memory_gb is not None and peak is not None):
        return seconds, False, True, []
    budget = device.total_memory_gb * (0.75 if device.kind == "mps" else 0.95)
    if peak <= budget:
        return seconds, False, True, []
    largest = est.largest_component_gb(dtype) + est.activation_gb(dtype)
    if largest > budget:
        return (
            seconds,
            False,
            False,
            [
                f"needs {peak:.1f} GB; even its largest part ({largest:.1f} GB) exceeds {budget:.1f} GB "
                f"usable on {device.name}: cannot run here"
            ],
        )
    from catimg.durations import format_duration

    # model CPU offload (diffusers enable_model_cpu_offload, as catimg.pipelines loads it): each component
    # moves to the GPU when it runs, so every image moves all the weights over the bus once
    extra = weights_gb / tp.bandwidth_gbs
    return (
        seconds + extra,
        True,
        True,
        [
            f"needs {peak:.1f} GB > {budget:.1f} GB usable on {device.name}: planned with CPU offload "
            f"(+{format_duration(extra)} per image)"
        ],
    )


def estimated_seconds(
    est: FlopEstimate,
    tp: Throughput,
    tflops_override: float | None = None,
    device: DeviceInfo | None = None,
    dtype: str = "fp16",
    batch: int = 1,
) -> float:
    """Seconds per image from a FLOP estimate and a throughput row: compute time + op launch overhead (shared
    by the ``batch`` images of one pipeline call)."""
    eff = tp.effective_tflops
    if device is not None and device.kind != "cpu" and dtype == "fp32":
        eff /= 4.0  # no fp16 tensor cores (TF32 at best)
    total = tflops_override if tflops_override is not None else est.total_tflops
    compute = total / eff
    launches = est.kernels_per_image * tp.launch_ms / 1000.0 / max(1, batch)
    return compute + launches


def catalog_costs(
    gens: Iterable[Generator],
    device: DeviceInfo,
    use_measured: bool = True,
    fallback_seconds: dict[str, float] | None = None,
    unknown_ok: Callable[[Generator], bool] | None = None,
    batch: int = 1,
    bases: dict[str, Generator] | None = None,
) -> dict[str, Cost]:
    """Costs of every generator, by name, by the one rule of the module doc.

    ``fallback_seconds``: the seconds a router was trained with, by generator name (rule step 3). ``bases``:
    the catalog entry of each generator whose run settings differ from it (see :func:`generator_cost`).

    A generator with no cost at all raises the ConfigError that says which cost to give, unless
    ``unknown_ok(gen)`` is true (it will not be routed to, e.g. it still needs calibration): it then gets a
    cost of kind ``"unknown"`` with NaN seconds and TFLOPs, so the rest of the catalog can still be routed and
    shown.
    """
    out: dict[str, Cost] = {}
    for g in gens:
        try:
            out[g.name] = generator_cost(
                g,
                device,
                use_measured=use_measured,
                batch=batch,
                router_seconds=(fallback_seconds or {}).get(g.name),
                base=(bases or {}).get(g.name),
            )
        except ConfigError:
            if unknown_ok is None or not unknown_ok(g):
                raise
            out[g.name] = Cost(
                seconds=math.nan,
                tflops=math.nan,
                kind="unknown",
                load_seconds=0.0,
                peak_memory_gb=None,
                note=f'no cost known: family "{g.family}" has no FLOP estimate; give cost_seconds '
                f"for [generators.{g.model}] in models.toml or run catimg bench",
            )
    return out


def routing_costs(
    gens: Iterable[Generator],
    device: DeviceInfo,
    router: TrainedRouter | None = None,
    run_as: Callable[[Generator], Generator] | None = None,
    unknown_ok: Callable[[Generator], bool] | None = None,
    batch: int = 1,
) -> dict[str, Cost]:
    """The costs that route ``gens`` (catalog entries) on ``device``: what explain, gen, plan, models and eval
    use.

    ``router``: its trained-with seconds count for the generators it knows with unchanged settings (rule step
    3). ``run_as`` maps a catalog entry to the settings the run uses (gen's --width/--height/--dtype).
    """
    gens = list(gens)
    trained: dict[str, float] = {}
    if router is not None:
        trained = {
            g.name: s for g in gens if router.knows(g) and (s := router.trained_seconds(g)) is not None
        }
    runs = [run_as(g) if run_as else g for g in gens]
    bases = {g.name: g for g, r in zip(gens, runs, strict=True) if r is not g}
    return catalog_costs(
        runs, device, fallback_seconds=trained, unknown_ok=unknown_ok, batch=batch, bases=bases
    )


def router_generator_costs(
    router: TrainedRouter, catalog: Catalog, device: DeviceInfo
) -> tuple[dict[str, Cost] | None, str]:
    """The routing costs (the one rule) of every generator of ``router``, for ``catimg eval``; or (None, why
    not).

    Every router generator must be in ``catalog`` with the settings it was trained on (else its cost on this
    device is unknown, and eval keeps the router's own training costs for all of them: one unit on one axis).
    """
    gens = []
    for name in router.generators:
        g = next((x for x in catalog.generators if x.name == name), None)
        if g is None or not router.knows(g):
            why = router.mismatch(g) if g is not None else f"{name}: not in {catalog.path}"
            return None, f"costs are the router's training costs ({router.cost_unit}): {why}"
        gens.append(g)
    try:
        costs = routing_costs(gens, device, router=router)
    except ConfigError as exc:
        return None, f"costs are the router's training costs ({router.cost_unit}): {exc.message}"
    return costs, f"costs are seconds per image on {device.name}, as explain and gen route by them"


def estimate_notice(
    costs: dict[str, Cost],
    names: Iterable[str] | None = None,
    repeats: int = 3,
    warmup: int = 1,
    models: dict[str, str] | None = None,
) -> str | None:
    """One line for stderr when estimates drive routing: which generators, and how long `catimg bench` takes.

    The bench time is the estimated load plus ``warmup + repeats`` images (bench's defaults) per model: bench
    measures one generator of a model (its cheapest here) and its step variants reuse that (``models``: name
    -> model; None counts every generator as its own model).
    """
    wanted = set(names) if names is not None else set(costs)
    est = {n: c for n, c in costs.items() if n in wanted and c.kind == "estimated"}
    if not est:
        return None
    from catimg.durations import format_duration

    per_model: dict[str, Cost] = {}
    for n, c in est.items():
        m = (models or {}).get(n, n)
        if m not in per_model or c.seconds < per_model[m].seconds:
            per_model[m] = c
    secs = sum(c.load_seconds + (warmup + repeats) * c.seconds for c in per_model.values())
    return (
        f"the costs of {', '.join(sorted(est))} are estimated from FLOPs, not measured on this device; "
        f"`catimg bench` measures them (about {format_duration(secs)}: a load and {warmup + repeats} images "
        "per model), and gen runs measure what they make"
    )


def with_note(cost: Cost, note: str) -> Cost:
    return replace(cost, note=f"{cost.note}; {note}" if cost.note else note)


__all__ = [
    "Cost",
    "Throughput",
    "DEVICE_THROUGHPUT",
    "device_throughput",
    "generator_cost",
    "catalog_costs",
    "routing_costs",
    "estimate_notice",
    "COST_SOURCES",
    "estimated_seconds",
    "device_class",
    "dtype_bytes",
]
