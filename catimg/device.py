"""The device images are made on: CUDA GPU, Apple MPS or CPU, and what it can hold.

Nothing here imports torch at module level. The CUDA and MPS probes take the module they query as an argument
(``torch.cuda`` / ``torch.backends.mps``), a small seam that lets tests exercise the CUDA branch with an object
that mimics ``torch.cuda``'s real functions: ``is_available()``, ``device_count()``, ``get_device_name(i)``,
``get_device_properties(i)`` (``.total_memory``, ``.major``, ``.minor``), ``mem_get_info(i)`` and
``is_bf16_supported()``.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from catimg.errors import DeviceError

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

    Returns None when CUDA is not available. Raises DeviceError when ``index`` names a device that does not exist.
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
            f'--device cuda:{index}: no such GPU; this machine has {count} CUDA device(s): '
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
        kind="cuda", index=index, name=name, total_memory_gb=round(total, 2),
        free_memory_gb=None if free is None else round(free, 2), capability=capability, bf16=bf16,
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
        kind="mps", index=None, name=_apple_chip_name() or "Apple GPU (MPS)", total_memory_gb=total,
        free_memory_gb=None, capability=None, bf16=False, torch_device="mps",
    )


def cpu_device() -> DeviceInfo:
    return DeviceInfo(
        kind="cpu", index=None, name=cpu_name(), total_memory_gb=_system_memory_gb(), free_memory_gb=None,
        capability=None, bf16=True, torch_device="cpu",
    )


# --------------------------------------------------------------------------------------------- detection

_OVERRIDE = re.compile(r"^(cuda|mps|cpu|gpu)(?::(\d+))?$")


def parse_override(override: str) -> tuple[str, int | None]:
    """``"cuda:1"`` -> ("cuda", 1). DeviceError for anything else."""
    text = override.strip().lower()
    m = _OVERRIDE.match(text)
    if not m or (m.group(1) in ("mps", "cpu") and m.group(2) is not None):
        raise DeviceError(f'--device "{override}" is not a device; use cpu, cuda, cuda:N or mps')
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

        torch_module = torch
    if kind in (None, "cuda"):
        info = probe_cuda(torch_module.cuda, index)
        if info is not None:
            return info
        if kind == "cuda":
            raise DeviceError(
                f'--device {override}: no CUDA GPU is available here (torch {getattr(torch_module, "__version__", "?")}'
                f"{' is a CPU-only build' if getattr(getattr(torch_module, 'version', None), 'cuda', 1) is None else ''}); "
                "use --device cpu, or install a CUDA build of torch"
            )
    if kind in (None, "mps"):
        mps = getattr(getattr(torch_module, "backends", None), "mps", None)
        info = probe_mps(mps) if mps is not None else None
        if info is not None:
            return info
        if kind == "mps":
            raise DeviceError(f"--device {override}: Apple MPS is not available on this machine; use --device cpu")
    return cpu_device()


def default_dtype(device: DeviceInfo, requested: str = "auto") -> str:
    """The dtype to load weights in: ``requested`` unless "auto"; else bf16/fp16 on CUDA, fp16 on MPS, fp32 on CPU.

    An explicit bf16 request on a GPU without bf16 falls back to fp16; fp16 on the CPU is honoured (slow but valid).
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
    """A stable key for cost tables and caches: ``cuda/nvidia-h100-80gb-hbm3``, ``mps/apple-m2-pro``, ``cpu/...``.

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
            ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=2, check=False
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
