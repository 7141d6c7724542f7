"""The device images are made on: CUDA GPU, Apple MPS or CPU, and what it can hold.

Nothing here imports torch at module level. The CUDA and MPS probes take the module they query as an argument
(``torch.cuda`` / ``torch.backends.mps``), a small seam that lets tests exercise the CUDA branch with an
object that mimics ``torch.cuda``'s real functions: ``is_available()``, ``device_count()``,
``get_device_name(i)``, ``get_device_properties(i)`` (``.total_memory``, ``.major``, ``.minor``),
``mem_get_info(i)`` and ``is_bf16_supported()``.

Commands that only describe the device (``models``, ``doctor``, ``explain``) use :func:`lookup_device`: no
torch import on a machine without a GPU driver, else a description cached in ``device.json`` in the user cache
dir (``$CATIMG_CACHE_DIR``), valid for 24 h while the boot, the NVIDIA driver, torch, Python, the host, the
visible devices and the requested ``--device`` are unchanged. Every real probe rewrites it;
``--refresh-device`` forces one.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from catimg.errors import DeviceError, InputError, did_you_mean

DeviceKind = Literal["cuda", "mps", "cpu"]
GIB = 1024**3
#: The dtypes weights can be loaded in ("auto": by device, see :func:`default_dtype`); the one list of them.
DTYPES = ("auto", "fp16", "bf16", "fp32")


@dataclass(frozen=True)
class DeviceInfo:
    """What catimg knows about the device it runs on."""

    kind: DeviceKind
    index: int | None
    name: str
    total_memory_gb: float | None
    free_memory_gb: float | None
    capability: tuple[int, int] | None
    bf16: bool
    torch_device: str  # what to pass to torch: "cuda:0", "mps", "cpu"

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("cuda", "mps")

    def describe(self) -> str:
        """One line for humans: ``cuda:0 NVIDIA H100 80GB HBM3, 79.1 GB (75.2 free), sm 9.0, bf16``."""
        parts = [f"{self.torch_device} {self.name}"]
        if self.total_memory_gb is not None:
            mem = f"{self.total_memory_gb:.1f} GB"
            if self.free_memory_gb is not None:
                mem += f" ({self.free_memory_gb:.1f} free)"
            parts.append(mem)
        if self.capability is not None:
            parts.append(f"sm {self.capability[0]}.{self.capability[1]}")
        if self.bf16 and self.kind != "cpu":
            parts.append("bf16")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["capability"] = list(self.capability) if self.capability else None
        d["device_class"] = device_class(self)
        return d


# --------------------------------------------------------------------------------------------- probes (seams)


def probe_cuda(cuda: Any, index: int | None = None) -> DeviceInfo | None:
    """Describe CUDA device ``index`` (default: the current/first) from a ``torch.cuda``-like module.

    Returns None when CUDA is not available. Raises DeviceError when ``index`` names a device that does not
    exist.
    """
    if not cuda.is_available():
        return None
    count = int(cuda.device_count())
    if count == 0:
        return None
    if index is None:
        index = 0
    if index < 0 or index >= count:
        raise DeviceError(
            f"--device cuda:{index}: no such GPU; this machine has {count} CUDA device(s): "
            f"use cuda:0{f' to cuda:{count - 1}' if count > 1 else ''}"
        )
    name = str(cuda.get_device_name(index))
    props = cuda.get_device_properties(index)
    total = float(props.total_memory) / GIB
    free: float | None
    try:
        free_b, _total_b = cuda.mem_get_info(index)
        free = float(free_b) / GIB
    except Exception:  # some drivers/MIG slices refuse; total is still known
        free = None
    capability = (int(props.major), int(props.minor))
    try:
        bf16 = bool(cuda.is_bf16_supported())
    except Exception:
        bf16 = capability >= (8, 0)
    return DeviceInfo(
        kind="cuda",
        index=index,
        name=name,
        total_memory_gb=round(total, 2),
        free_memory_gb=None if free is None else round(free, 2),
        capability=capability,
        bf16=bf16,
        torch_device=f"cuda:{index}",
    )


def probe_mps(mps: Any) -> DeviceInfo | None:
    """Describe Apple's Metal device from a ``torch.backends.mps``-like module (None when absent)."""
    try:
        if not (mps.is_available() and mps.is_built()):
            return None
    except AttributeError:
        return None
    total = _system_memory_gb()  # unified memory: the GPU shares the machine's RAM
    return DeviceInfo(
        kind="mps",
        index=None,
        name=_apple_chip_name() or "Apple GPU (MPS)",
        total_memory_gb=total,
        free_memory_gb=None,
        capability=None,
        bf16=False,
        torch_device="mps",
    )


def cpu_device() -> DeviceInfo:
    return DeviceInfo(
        kind="cpu",
        index=None,
        name=cpu_name(),
        total_memory_gb=_system_memory_gb(),
        free_memory_gb=None,
        capability=None,
        bf16=True,
        torch_device="cpu",
    )


# --------------------------------------------------------------------------------------------- detection

_OVERRIDE = re.compile(r"^(cuda|mps|cpu|gpu)(?::(\d+))?$")


def parse_override(override: str) -> tuple[str, int | None]:
    """``"cuda:1"`` -> ("cuda", 1). InputError (exit 2) for anything else."""
    text = override.strip().lower()
    m = _OVERRIDE.match(text)
    if not m or (m.group(1) in ("mps", "cpu") and m.group(2) is not None):
        # a mistyped option, not a device problem: exit 2 like any bad option value
        raise InputError(
            f'--device "{override}" is not a device{did_you_mean(text, ["cpu", "cuda", "mps"])}; '
            "use cpu, cuda, cuda:N or mps"
        )
    kind = "cuda" if m.group(1) == "gpu" else m.group(1)
    return kind, int(m.group(2)) if m.group(2) is not None else None


def detect_device(override: str | None = None, torch_module: Any = None) -> DeviceInfo:
    """The device to run on: ``override`` ("cpu", "cuda", "cuda:1", "mps") or the best available one.

    Falls back from CUDA to MPS to CPU when nothing is requested. ``$CATIMG_DEVICE`` acts as an override.
    ``torch_module`` is the seam for tests (default: the real ``torch``, imported here, not at module level).
    """
    if override is None:
        override = os.environ.get("CATIMG_DEVICE") or None
    kind: str | None = None
    index: int | None = None
    if override is not None:
        kind, index = parse_override(override)
        if kind == "cpu":
            return cpu_device()
    if torch_module is None:
        import torch

        info = _probe(torch_module=torch, kind=kind, index=index, override=override)
        write_device_cache(override, info)  # every real probe keeps the cache of models/doctor/explain fresh
        return info
    return _probe(torch_module=torch_module, kind=kind, index=index, override=override)


def _probe(torch_module: Any, kind: str | None, index: int | None, override: str | None) -> DeviceInfo:
    if kind in (None, "cuda"):
        info = probe_cuda(torch_module.cuda, index)
        if info is not None:
            return info
        if kind == "cuda":
            version = getattr(torch_module, "__version__", "?")
            cpu_only = getattr(getattr(torch_module, "version", None), "cuda", 1) is None
            raise DeviceError(
                f"--device {override}: no CUDA GPU is available here (torch {version}"
                f"{' is a CPU-only build' if cpu_only else ''}); "
                "use --device cpu, or install a CUDA build of torch"
            )
    if kind in (None, "mps"):
        mps = getattr(getattr(torch_module, "backends", None), "mps", None)
        info = probe_mps(mps) if mps is not None else None
        if info is not None:
            return info
        if kind == "mps":
            raise DeviceError(
                f"--device {override}: Apple MPS is not available on this machine; use --device cpu"
            )
    return cpu_device()


# --------------------------------------------------------------------------------------------- without torch

#: A cached description is used for at most this long, and only while :func:`_cache_key` is unchanged.
DEVICE_CACHE_MAX_AGE_S = 24 * 3600
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


@dataclass(frozen=True)
class DeviceLookup:
    """A device description and where it came from, for the commands that need no torch (models, doctor,
    explain).

    ``source``: "probed" (torch asked now), "cached" (``cached_at``, seconds since the epoch), "no-gpu" (no
    GPU driver on this machine, so the CPU without importing torch) or "requested" (``--device cpu``).
    """

    info: DeviceInfo
    source: str
    cached_at: float | None = None

    def note(self, refresh_hint: str) -> str:
        """What to print after the description: when it was cached and how to probe again; empty otherwise."""
        if self.source != "cached" or self.cached_at is None:
            return ""
        import time

        age = max(0.0, time.time() - self.cached_at)
        ago = f"{age / 3600:.0f} h" if age >= 5400 else f"{age / 60:.0f} min" if age >= 90 else f"{age:.0f} s"
        return f"(cached {ago} ago, free memory not shown; {refresh_hint} detects it again)"


def gpu_possible() -> bool:
    """False only where no GPU can be seen without torch's help: Linux without NVIDIA/ROCm/WSL GPU device
    nodes."""
    if platform.system() != "Linux":
        return True  # macOS (MPS), Windows: only torch can tell
    return any(os.path.exists(p) for p in _GPU_NODES)


def device_cache_path() -> Path:
    """``device.json`` in ``$CATIMG_CACHE_DIR`` or the platformdirs user cache dir for catimg."""
    from catimg.paths import cache_dir

    return cache_dir() / "device.json"


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _cache_key(override: str | None) -> dict[str, str]:
    """What a cached description depends on: any change (a reboot, a new driver or torch, other visible GPUs,
    another ``--device``) makes the cache stale. Read without importing torch."""
    from importlib import metadata

    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "none"
    return {
        "device": (override or "").strip().lower(),
        "torch": torch_version,
        "python": os.path.realpath(sys.executable),
        "host": platform.node(),
        "boot": _read_text("/proc/sys/kernel/random/boot_id"),
        "driver": _read_text("/proc/driver/nvidia/version").split("\n")[0],
        **{var: os.environ.get(var, "\0unset") for var in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")},
    }


def read_device_cache(override: str | None) -> tuple[DeviceInfo, float] | None:
    """The cached description for ``override`` and when it was written; None if absent, stale, old or
    unreadable."""
    import json
    import time

    try:
        doc = json.loads(device_cache_path().read_text(encoding="utf-8"))
        entry = doc["entries"][json.dumps(_cache_key(override), sort_keys=True)]
        at = float(entry["at"])
        if not 0 <= time.time() - at <= DEVICE_CACHE_MAX_AGE_S:
            return None
        d = dict(entry["info"])
        d["capability"] = tuple(d["capability"]) if d.get("capability") else None
        return DeviceInfo(**d), at
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_device_cache(override: str | None, info: DeviceInfo) -> None:
    """Remember ``info`` (free memory left out: it changes) for ``override``; best effort, written
    atomically."""
    import json
    import time

    path = device_cache_path()
    try:
        try:
            entries = json.loads(path.read_text(encoding="utf-8")).get("entries", {})
            if not isinstance(entries, dict):
                entries = {}
        except (OSError, ValueError, AttributeError):
            entries = {}
        d = asdict(info)
        d["free_memory_gb"] = None
        entries[json.dumps(_cache_key(override), sort_keys=True)] = {"at": time.time(), "info": d}
        entries = dict(list(entries.items())[-8:])  # a few overrides at most
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": 1, "entries": entries}, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache dir costs speed, not correctness


def lookup_device(
    override: str | None = None, refresh: bool = False, torch_module: Any = None
) -> DeviceLookup:
    """The device for commands that only describe it: without torch where the answer is certain or cached.

    ``--device cpu`` and machines with no GPU driver need no torch. Otherwise a description cached by an
    earlier probe is used while :func:`_cache_key` is unchanged and for at most
    :data:`DEVICE_CACHE_MAX_AGE_S`; ``refresh`` (or a stale cache) probes with torch (``torch_module``: the
    test seam) and caches the result.
    """
    if override is None:
        override = os.environ.get("CATIMG_DEVICE") or None
    kind = parse_override(override)[0] if override is not None else None
    if kind == "cpu":
        return DeviceLookup(cpu_device(), "requested")
    if kind is None and torch_module is None and not gpu_possible():
        return DeviceLookup(cpu_device(), "no-gpu")
    if not refresh:
        cached = read_device_cache(override)
        if cached is not None:
            return DeviceLookup(cached[0], "cached", cached[1])
    info = detect_device(override, torch_module=torch_module)
    if torch_module is not None:
        write_device_cache(override, info)
    return DeviceLookup(info, "probed")


def default_dtype(device: DeviceInfo, requested: str = "auto") -> str:
    """The dtype to load weights in: ``requested`` unless "auto"; else bf16/fp16 on CUDA, fp16 on MPS, fp32 on
    CPU.

    An explicit bf16 request on a GPU without bf16 falls back to fp16; fp16 on the CPU is honoured (slow but
    valid).
    """
    if requested not in DTYPES:
        raise DeviceError(f'dtype "{requested}" is unknown; use {", ".join(DTYPES[:-1])} or {DTYPES[-1]}')
    if requested == "bf16" and device.kind == "cuda" and not device.bf16:
        return "fp16"
    if requested == "bf16" and device.kind == "mps":
        return "fp16"
    if requested != "auto":
        return requested
    if device.kind == "cuda":
        return "bf16" if device.bf16 else "fp16"
    if device.kind == "mps":
        return "fp16"
    return "fp32"


def dtype_bytes(dtype: str) -> int:
    return 4 if dtype == "fp32" else 2


def torch_dtype(dtype: str) -> Any:
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]


def device_class(device: DeviceInfo) -> str:
    """A stable key for cost tables and caches: ``cuda/nvidia-h100-80gb-hbm3``, ``mps/apple-m2-pro``,
    ``cpu/...``.

    Two machines with the same GPU model share a class; the index of the GPU does not matter.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", device.name.lower()).strip("-") or "unknown"
    if device.kind == "cpu":
        slug = f"{slug}-{os.cpu_count() or 1}c"
    return f"{device.kind}/{slug}"


# --------------------------------------------------------------------------------------------- host facts


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        chip = _apple_chip_name()
        if chip:
            return chip
    return platform.processor() or platform.machine() or "CPU"


def _apple_chip_name() -> str | None:
    if platform.system() != "Darwin":
        return None
    try:
        import subprocess

        out = subprocess.run(
            ["sysctl", "-n", "machdep.cpu.brand_string"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
        return out.stdout.strip() or None
    except Exception:
        return None


def _system_memory_gb() -> float | None:
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
        return round(pages * size / GIB, 2)
    except (ValueError, OSError, AttributeError):
        return None
