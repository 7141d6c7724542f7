"""What a generator costs on this device: seconds per image, TFLOPs per image, load time, memory.

Precedence, per generator:

1. **explicit**: ``cost_seconds`` / ``cost_tflops`` from ``models.toml`` (the user knows best);
2. **measured**: a ``catimg bench`` result for this device class and these exact settings (``catimg.bench``);
3. **estimated**: analytic TFLOPs (``catimg.flops``) divided by a throughput for the device class (the table in
   :data:`DEVICE_THROUGHPUT`), plus a per-kernel launch overhead; marked ``kind="estimated"``.

Memory feasibility: the peak memory is estimated as the weights at the chosen dtype plus the activations of the
largest step (denoiser pass or VAE decode). A generator whose peak does not fit the GPU is planned with model CPU
offload when its largest single component plus activations fits (cost raised by the time to move every
component's weights over PCIe once per image); otherwise it is infeasible (``feasible=False``). The note says why.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from catimg.config import Generator
from catimg.device import DeviceInfo, default_dtype, device_class, dtype_bytes
from catimg.errors import ConfigError

CostKind = Literal["explicit", "measured", "estimated", "unknown"]


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


#: Effective throughput = peak × efficiency. Peaks are the vendors' dense fp16 tensor numbers (fp32 accumulate);
#: the efficiency 0.2-0.4 is what diffusers pipelines reach in fp16/bf16 at 512-1024 px (SDXL 1024² with guidance,
#: 13.5 TFLOPs a step, runs at about 14-16 steps/s on an H100, 7 on an A100, 3 on an RTX 4090). Order matters:
#: the first pattern that matches wins.
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
        return Throughput(r".*", f"CPU ({cores} cores)", CPU_GFLOPS_PER_CORE * cores / 1000.0, CPU_EFFICIENCY,
                          CPU_LAUNCH_MS, 1000.0, 1.0)
    for row in DEVICE_THROUGHPUT:
        if re.search(row.pattern, name):
            return row
    return GENERIC_MPS if device.kind == "mps" else GENERIC_CUDA


# ------------------------------------------------------------------------------------------ costs


def generator_cost(gen: Generator, device: DeviceInfo, use_measured: bool = True, batch: int = 1) -> Cost:
    """The cost of one image from ``gen`` on ``device`` (explicit > measured > estimated; see module doc).

    ``gen`` carries the settings the run will use (size and dtype overrides applied); ``batch`` images per
    pipeline call share the per-op launch overhead of an estimate.
    """
    from catimg.flops import estimate_flops

    dtype = default_dtype(device, gen.dtype)
    try:
        est = estimate_flops(gen)
    except ConfigError as exc:
        if gen.cost_seconds is not None:
            tflops = gen.cost_tflops if gen.cost_tflops is not None else 0.0
            return Cost(seconds=gen.cost_seconds, tflops=tflops, kind="explicit", load_seconds=0.0,
                        peak_memory_gb=None, note=f"explicit cost from models.toml; no FLOP estimate ({exc})")
        raise ConfigError(
            f"{exc}; give cost_seconds (and optionally cost_tflops) for [generators.{gen.model}] in models.toml"
        ) from exc

    tflops = gen.cost_tflops if gen.cost_tflops is not None else est.total_tflops
    tp = device_throughput(device)
    seconds = estimated_seconds(est, tp, tflops_override=gen.cost_tflops, device=device, dtype=dtype, batch=batch)
    weights_gb = est.weights_gb(dtype)
    load_seconds = weights_gb / tp.disk_gbs + 1.0  # + pipeline construction
    peak = est.peak_memory_gb(dtype)
    kind: CostKind = "estimated"
    notes: list[str] = [f"estimated from {est.total_tflops:.3g} TFLOPs on {tp.label}"]

    if use_measured:
        from catimg.bench import lookup

        m = lookup(gen, device)
        if m is not None:
            seconds = m.seconds_per_image(gen.steps)
            load_seconds = m.load_seconds
            if m.peak_memory_gb is not None:
                peak = m.peak_memory_gb
            kind = "measured"
            notes = [f"measured by catimg bench on {m.measured_at[:10]}"]

    offload, feasible = False, True
    if device.is_gpu and device.total_memory_gb is not None and peak is not None:
        budget = device.total_memory_gb * (0.75 if device.kind == "mps" else 0.95)
        if peak > budget:
            largest = est.largest_component_gb(dtype) + est.activation_gb(dtype)
            if largest <= budget:
                offload = True
                # model CPU offload (diffusers enable_model_cpu_offload, as catimg.pipelines loads it): each
                # component moves to the GPU when it runs, so every image moves all the weights over the bus once
                extra = weights_gb / tp.bandwidth_gbs
                seconds += extra
                notes.append(
                    f"needs {peak:.1f} GB > {budget:.1f} GB usable on {device.name}: planned with CPU offload "
                    f"(+{extra:.1f} s/image)"
                )
            else:
                feasible = False
                notes.append(
                    f"needs {peak:.1f} GB; even its largest part ({largest:.1f} GB) exceeds {budget:.1f} GB "
                    f"usable on {device.name}: cannot run here"
                )

    if gen.cost_seconds is not None:
        seconds = gen.cost_seconds
        kind = "explicit"
        notes[0] = "explicit cost_seconds from models.toml"
    elif gen.cost_tflops is not None and kind == "estimated":
        notes[0] = f"estimated from explicit cost_tflops = {gen.cost_tflops:g} on {tp.label}"
    return Cost(seconds=float(seconds), tflops=float(tflops), kind=kind, load_seconds=float(load_seconds),
                peak_memory_gb=None if peak is None else round(float(peak), 2), offload=offload,
                feasible=feasible, note="; ".join(notes))


def estimated_seconds(est: Any, tp: Throughput, tflops_override: float | None = None,
                      device: DeviceInfo | None = None, dtype: str = "fp16", batch: int = 1) -> float:
    """Seconds per image from a FLOP estimate and a throughput row: compute time + op launch overhead (shared by
    the ``batch`` images of one pipeline call)."""
    eff = tp.effective_tflops
    if device is not None and device.kind != "cpu" and dtype == "fp32":
        eff /= 4.0  # no fp16 tensor cores (TF32 at best)
    total = tflops_override if tflops_override is not None else est.total_tflops
    compute = total / eff
    launches = est.kernels_per_image * tp.launch_ms / 1000.0 / max(1, batch)
    return compute + launches


def catalog_costs(gens: Iterable[Generator], device: DeviceInfo, use_measured: bool = True,
                  fallback_seconds: dict[str, float] | None = None,
                  unknown_ok: Callable[[Generator], bool] | None = None, batch: int = 1) -> dict[str, Cost]:
    """Costs of every generator, by name. Generators sharing a model share the FLOP count (computed once).

    ``fallback_seconds`` (the seconds a router was trained with, by generator name) is used only for a generator
    that has neither an explicit ``cost_seconds`` nor a FLOP estimate (an unknown family from a Hub id that is not
    downloaded): routing then still works, on the measured seconds the user gave at training time.

    A generator with no cost at all raises the ConfigError that says which cost to give, unless
    ``unknown_ok(gen)`` is true (it will not be routed to, e.g. it still needs calibration): it then gets a cost of
    kind ``"unknown"`` with NaN seconds and TFLOPs, so the rest of the catalog can still be routed and shown.
    """
    out: dict[str, Cost] = {}
    for g in gens:
        try:
            out[g.name] = generator_cost(g, device, use_measured=use_measured, batch=batch)
        except ConfigError:
            secs = (fallback_seconds or {}).get(g.name)
            if secs is None or not secs > 0:
                if unknown_ok is None or not unknown_ok(g):
                    raise
                out[g.name] = Cost(seconds=math.nan, tflops=math.nan, kind="unknown", load_seconds=0.0,
                                   peak_memory_gb=None,
                                   note=f"no cost known: family \"{g.family}\" has no FLOP estimate; give cost_seconds "
                                        f"for [generators.{g.model}] in models.toml or run catimg bench")
                continue
            tflops = g.cost_tflops if g.cost_tflops is not None else 0.0
            out[g.name] = Cost(seconds=float(secs), tflops=float(tflops), kind="measured", load_seconds=0.0,
                               peak_memory_gb=None,
                               note=f"seconds per image from the router's training measurements; no FLOP estimate "
                                    f"for source \"{g.source}\" (family \"{g.family}\"), so TFLOPs are unknown "
                                    f"(give cost_tflops in models.toml)")
    return out


def with_note(cost: Cost, note: str) -> Cost:
    return replace(cost, note=f"{cost.note}; {note}" if cost.note else note)


__all__ = [
    "Cost", "Throughput", "DEVICE_THROUGHPUT", "device_throughput", "generator_cost", "catalog_costs",
    "estimated_seconds", "device_class", "dtype_bytes",
]
