"""Loading diffusers pipelines for generators: Hub ids from the Hugging Face cache, or local folders.

* One pipeline per ``Generator.model`` (+ dtype + device): step variants (``sdxl@10``, ``sdxl@20``) share it.
* Weights are checked on disk *before* diffusers is asked: a generator whose weights are not cached fails at
  once with :class:`WeightsMissingError` (never the Hub's retry loop). Downloads happen only when the user
  allows them: ``--allow-download`` or ``CATIMG_ALLOW_DOWNLOAD=1`` (default: off, and ``HF_HUB_OFFLINE=1`` is
  set).
* dtype: the ``--dtype`` option, else the generator's ``dtype`` unless "auto", else by device (bf16/fp16 on
  CUDA, fp16 on MPS, fp32 on CPU).
* Safety checker: off by default (``safety_checker = false`` in models.toml); ``safety_checker = true`` keeps
  the pipeline's own checker where the model ships one (it blacks out images it flags; catimg then records the
  image as black and retries it as a fault).
* Scheduler by diffusers class name (``scheduler = "EulerDiscreteScheduler"``), swapped in from the pipeline's
  own scheduler config; an unknown name is an error with a "did you mean".
* :class:`PipelineCache` hands out :class:`LoadedPipeline` objects: the diffusers pipeline with the dtype and
  offload it was loaded with and its own scheduler (nothing catimg needs is stuck on the diffusers object).
* The Hugging Face libraries' progress bars and notices are silenced.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catimg.errors import ConfigError, GenerationError, WeightsMissingError, did_you_mean, first_line

if TYPE_CHECKING:
    from catimg.config import Generator
    from catimg.device import DeviceInfo

ALLOW_DOWNLOAD_ENV = "CATIMG_ALLOW_DOWNLOAD"


def downloads_allowed(flag: bool | None = None) -> bool:
    """``--allow-download`` when given, else ``CATIMG_ALLOW_DOWNLOAD`` (1/true/yes), else False."""
    if flag:
        return True
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> Path:
    """Where Hub models are cached, read from the environment at call time (HF_HUB_CACHE > HF_HOME/hub)."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def hub_snapshot(repo_id: str, revision: str = "main") -> Path | None:
    """The cached snapshot folder of ``repo_id`` holding a ``model_index.json``, or None."""
    repo_dir = hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))
    ref = repo_dir / "refs" / revision
    candidates: list[Path] = []
    if ref.is_file():
        try:
            candidates.append(repo_dir / "snapshots" / ref.read_text().strip())
        except OSError:
            pass
    snaps = repo_dir / "snapshots"
    if snaps.is_dir():
        candidates.extend(sorted(snaps.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True))
    for c in candidates:
        if (c / "model_index.json").is_file():
            return c
    return None


def hub_unreachable(timeout: float = 1.0) -> str | None:
    """None when the Hub's host answers a TCP connection within ``timeout`` seconds, else why not.

    Downloads are only tried when this passes, so an offline machine fails in about a second instead of
    huggingface_hub's retry loop (about 25 s). Behind an HTTPS proxy the host is not reached directly: no
    probe.
    """
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"
    return None


def fetch_hint(source: str) -> str:
    """How to get a Hub model's weights: `hf download` (the command huggingface_hub ships), or
    --allow-download."""
    return f"fetch it with `hf download {source}`, or rerun with --allow-download"


def download_gb(gen: Generator) -> float | None:
    """About how many GB of weights a Hub generator needs (from the built-in family numbers; None when
    unknown)."""
    if gen.is_local_folder:
        return None
    from catimg.flops import estimate_flops

    try:
        est = estimate_flops(gen)
    except (ConfigError, OSError, ValueError):
        return None
    gb = est.weights_gb("fp16" if gen.variant == "fp16" else "fp32")
    return gb if gb > 0 else None


def missing_weights(gens: list[Generator], allow_download: bool = False) -> WeightsMissingError | None:
    """One error naming every model of ``gens`` whose weights are missing, with sizes where known; None if
    none.

    Looks only at the disk (and, with downloads allowed, at whether the Hub answers): fast, and without torch.
    Generators that share a model are named once.
    """
    cache_missing: list[Generator] = []
    other: list[str] = []
    seen: set[str] = set()
    for g in gens:
        if g.model in seen:
            continue
        seen.add(g.model)
        try:
            check_weights(g, allow_download)
        except WeightsMissingError as exc:
            if not g.is_local_folder and not downloads_allowed(allow_download):
                cache_missing.append(g)
            else:
                other.append(exc.message)
    if not cache_missing and not other:
        return None
    if len(cache_missing) == 1 and not other:
        g = cache_missing[0]
        size = download_gb(g)
        about = f", about {size:.1f} GB" if size else ""
        return WeightsMissingError(
            f'generator "{g.name}": weights for {g.source}{about} are not in the Hugging Face cache '
            f"({hub_cache_dir()}) and downloads are off; {fetch_hint(g.source)}"
        )
    parts = []
    if cache_missing:
        names = []
        for g in cache_missing:
            size = download_gb(g)
            names.append(f"{g.model} ({g.source}" + (f", about {size:.1f} GB)" if size else ")"))
        total = [download_gb(g) for g in cache_missing]
        known = sum(t for t in total if t)
        parts.append(
            f"weights of {len(cache_missing)} models are not in the Hugging Face cache "
            f"({hub_cache_dir()}) and "
            f"downloads are off: {', '.join(names)}"
            + (f"; about {known:.1f} GB in all" if known and len(cache_missing) > 1 else "")
            + "; fetch them with "
            + " and ".join(f"`hf download {g.source}`" for g in cache_missing)
            + ", or rerun with --allow-download"
        )
    parts.extend(other)
    return WeightsMissingError("; ".join(parts))


def _read_model_index(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _components(index: dict[str, Any]) -> list[str]:
    """Component sub-folders a pipeline's model_index.json names (non-null entries like ["diffusers",
    "X"])."""
    return [
        k
        for k, v in index.items()
        if not k.startswith("_")
        and isinstance(v, list)
        and len(v) == 2
        and v[0] is not None
        and v[1] is not None
    ]


def weights_location(gen: Generator) -> Path | None:
    """The folder holding the generator's pipeline (local folder or cached Hub snapshot), or None if
    absent."""
    if gen.is_local_folder:
        p = Path(gen.source).expanduser()
        return p if p.is_dir() else None
    return hub_snapshot(gen.source)


def weights_available(gen: Generator) -> bool:
    """True when the generator's complete pipeline is on disk (every component folder present)."""
    loc = weights_location(gen)
    if loc is None:
        return False
    index = _read_model_index(loc)
    if index is None:
        return False
    return all((loc / c).is_dir() for c in _components(index))


def check_weights(gen: Generator, allow_download: bool = False) -> Path | None:
    """Fail fast: the pipeline folder to load from, or None when it will be downloaded.

    Raises WeightsMissingError (weights absent, downloads off) or ConfigError (a local folder that is not a
    diffusers pipeline). Looks only at the disk; never at the network.
    """
    if gen.is_local_folder:
        p = Path(gen.source).expanduser()
        if not p.exists():
            raise WeightsMissingError(
                f'generator "{gen.name}": local folder {p} does not exist; fix source in models.toml'
            )
        if not p.is_dir() or not (p / "model_index.json").is_file():
            raise ConfigError(
                f'generator "{gen.name}": {p} is not a diffusers pipeline (no model_index.json); '
                "point source at a folder saved with save_pretrained or at a Hub id"
            )
        index = _read_model_index(p)
        if index is None:
            raise ConfigError(
                f'generator "{gen.name}": {p / "model_index.json"} is not valid JSON; re-save the pipeline'
            )
        missing = [c for c in _components(index) if not (p / c).is_dir()]
        if missing:
            raise WeightsMissingError(
                f'generator "{gen.name}": {p} lacks the component folder(s) {", ".join(missing)}; '
                "re-save the pipeline"
            )
        return p
    if weights_available(gen):
        return hub_snapshot(gen.source)
    if downloads_allowed(allow_download):
        problem = hub_unreachable()
        if problem is not None:
            raise WeightsMissingError(
                f'generator "{gen.name}": weights for {gen.source} are not in the Hugging Face cache '
                "and the Hub is "
                f"unreachable ({problem}); connect to the network, or fetch them on another machine with "
                f"`hf download {gen.source}` and copy the cache ({hub_cache_dir()})"
            )
        return None
    raise WeightsMissingError(
        f'generator "{gen.name}": weights for {gen.source} are not in the Hugging Face cache '
        f"({hub_cache_dir()}) "
        f"and downloads are off; {fetch_hint(gen.source)}"
    )


def resolve_dtype(gen: Generator, device: DeviceInfo, dtype: str | None = None) -> str:
    """``dtype`` (the --dtype option) > the generator's dtype unless auto > by device."""
    from catimg.device import default_dtype

    requested = dtype if dtype and dtype != "auto" else gen.dtype
    return default_dtype(device, requested or "auto")


_QUIET = False


def quiet_hf() -> None:
    """Silence the progress bars and notices of diffusers, transformers and huggingface_hub."""
    global _QUIET
    if _QUIET:
        return
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import diffusers.utils.logging as dlog
    import transformers.utils.logging as tlog
    from huggingface_hub.utils.tqdm import disable_progress_bars  # where it is defined and exported

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    disable_progress_bars()
    warnings.filterwarnings("ignore", module=r"(diffusers|transformers|huggingface_hub|torch)(\..*)?")
    _QUIET = True


def scheduler_names() -> list[str]:
    import diffusers

    return sorted(n for n in dir(diffusers) if n.endswith("Scheduler") and not n.startswith("_"))


def check_scheduler(gen: Generator) -> None:
    """ConfigError when the generator names a scheduler diffusers does not have (with a did-you-mean)."""
    if gen.scheduler is None:
        return
    names = scheduler_names()
    if gen.scheduler not in names:
        raise ConfigError(
            f'generator "{gen.name}": scheduler = "{gen.scheduler}" is not a diffusers scheduler'
            f"{did_you_mean(gen.scheduler, names)}; use a class name such as EulerDiscreteScheduler"
        )


def apply_scheduler(pipe: Any, gen: Generator, default: Any = None) -> str:
    """Set the generator's scheduler on the (shared) pipeline; return the scheduler class name in use.

    ``default`` is the pipeline's own scheduler (None: the one it has now), used when ``gen`` names none and
    as the config of the one it names.
    """
    import diffusers

    original = pipe.scheduler if default is None else default
    if gen.scheduler is None:
        if pipe.scheduler is not original:
            pipe.scheduler = original
        return type(pipe.scheduler).__name__
    if type(pipe.scheduler).__name__ != gen.scheduler:
        check_scheduler(gen)
        cls = getattr(diffusers, gen.scheduler)
        pipe.scheduler = cls.from_config(original.config)
    return gen.scheduler


def _load_kwargs(folder: Path | None, gen: Generator, dtype: str) -> dict[str, Any]:
    from catimg.device import torch_dtype

    kw: dict[str, Any] = {"dtype": torch_dtype(dtype)}
    if gen.variant:
        kw["variant"] = gen.variant
    index = _read_model_index(folder) if folder is not None else None
    if index is not None and "safety_checker" in index and not gen.safety_checker:
        kw["safety_checker"] = None
        kw["requires_safety_checker"] = False
    return kw


def load_pipeline(
    gen: Generator,
    device: DeviceInfo,
    dtype: str | None = None,
    allow_download: bool = False,
    offload: bool = False,
) -> Any:
    """Load the diffusers pipeline behind ``gen`` onto ``device`` (one call = one load; see PipelineCache)."""
    allow = downloads_allowed(allow_download)
    folder = check_weights(gen, allow)
    check_scheduler(gen)
    if not allow:
        os.environ["HF_HUB_OFFLINE"] = "1"
    quiet_hf()
    from diffusers import DiffusionPipeline

    dt = resolve_dtype(gen, device, dtype)
    kw = _load_kwargs(folder, gen, dt)
    where: str = str(folder) if folder is not None else gen.source
    if folder is None:
        kw["cache_dir"] = str(hub_cache_dir())
    index = _read_model_index(folder) if folder is not None else None
    cls = str((index or {}).get("_class_name", ""))
    try:
        if index is not None and not any(k in cls for k in ("Img2Img", "Inpaint", "Depth2Img", "Upscale")):
            # A text-to-image pipeline on disk: DiffusionPipeline loads the class its model_index names,
            # without importing diffusers' auto-pipeline registry (about 2 s on two cores, paid on every run).
            pipe = DiffusionPipeline.from_pretrained(where, **kw)
        else:
            from diffusers import AutoPipelineForText2Image

            try:
                pipe = AutoPipelineForText2Image.from_pretrained(where, **kw)
            except ValueError:
                pipe = DiffusionPipeline.from_pretrained(where, **kw)
    except OSError as exc:
        if folder is None:
            raise WeightsMissingError(
                f'generator "{gen.name}": could not download {gen.source} ({first_line(exc)}); '
                f"{fetch_hint(gen.source)}"
            ) from exc
        raise GenerationError(
            f'generator "{gen.name}": loading {where} failed: {first_line(exc)}; re-save or re-download it'
        ) from exc
    except Exception as exc:
        raise GenerationError(
            f'generator "{gen.name}": loading {where} failed ({first_line(exc, typed=True)}); '
            "check that the folder holds a complete diffusers text-to-image pipeline"
        ) from exc
    if uses_offload(offload, device):
        try:
            pipe.enable_model_cpu_offload(gpu_id=device.index or 0)
        except Exception as exc:  # accelerate missing or too old
            raise GenerationError(
                f'generator "{gen.name}": does not fit the GPU and CPU offload needs accelerate ({exc}); '
                "pip install accelerate, or pick a smaller generator"
            ) from exc
    else:
        pipe.to(device.torch_device)
    try:
        pipe.set_progress_bar_config(disable=True)
    except Exception:  # pragma: no cover - every DiffusionPipeline has it
        pass
    return pipe


def uses_offload(offload: bool, device: DeviceInfo) -> bool:
    """Whether a pipeline asked to ``offload`` is loaded with model CPU offload (only on CUDA)."""
    return bool(offload and device.kind == "cuda")


@dataclass(frozen=True, eq=False)
class LoadedPipeline:
    """A diffusers pipeline as catimg loaded it, for the generators that share it (step variants of a
    model)."""

    pipe: Any
    dtype: str  # as loaded: "fp32", "fp16", "bf16"
    offload: bool  # model CPU offload (CUDA only)
    default_scheduler: Any  # the pipeline's own scheduler, before any generator swapped in another

    @cached_property
    def call_parameters(self) -> frozenset[str]:
        """The keyword parameters of the pipeline's ``__call__`` (looked up once)."""
        return frozenset(inspect.signature(self.pipe.__call__).parameters)

    def use_scheduler(self, gen: Generator) -> str:
        """Put ``gen``'s scheduler (or the pipeline's own) in place; its class name."""
        return apply_scheduler(self.pipe, gen, self.default_scheduler)

    def scheduler_name(self, gen: Generator) -> str:
        """The class name of the scheduler ``gen`` runs with on this pipeline."""
        return gen.scheduler or type(self.default_scheduler).__name__

    def generator_device(self, device: DeviceInfo) -> str:
        """Where seeded ``torch.Generator`` objects live: the GPU, else (CPU, MPS, offloaded) the CPU."""
        return "cpu" if device.kind != "cuda" or self.offload else device.torch_device


def release(loaded: LoadedPipeline, device: DeviceInfo | None = None) -> None:
    """Drop a pipeline's weights from (GPU) memory."""
    import gc

    try:
        if device is not None and device.kind == "cuda" and not loaded.offload:
            loaded.pipe.to("cpu")
    except Exception:
        pass
    del loaded
    gc.collect()
    if device is not None and device.kind == "cuda":
        import torch

        torch.cuda.empty_cache()


@dataclass
class PipelineCache:
    """:class:`LoadedPipeline` objects keyed by (model, dtype, device): step variants share one; counts loads.

    Before loading another model, pipelines already held are released when memory is short: on a GPU when the
    predicted peak memory of what is held plus the new model exceeds ~90% of the device's memory (or is
    unknown), on the CPU when it exceeds ~80% of system memory.
    """

    device: DeviceInfo
    dtype: str | None = None
    allow_download: bool = False
    loader: Any = None  # injection seam: a function with load_pipeline's signature
    pipes: dict[tuple[str, str, str], LoadedPipeline] = field(default_factory=dict)
    peaks: dict[tuple[str, str, str], float | None] = field(default_factory=dict)
    loads: list[str] = field(default_factory=list)
    load_seconds: dict[str, float] = field(default_factory=dict)
    releases: list[str] = field(default_factory=list)

    def key(self, gen: Generator) -> tuple[str, str, str]:
        return (gen.model, resolve_dtype(gen, self.device, self.dtype), self.device.torch_device)

    def holds(self, model: str) -> bool:
        """Whether a pipeline of ``model`` is loaded."""
        return any(k[0] == model for k in self.pipes)

    def models(self) -> set[str]:
        """The models whose pipelines are loaded."""
        return {k[0] for k in self.pipes}

    def peek(self, gen: Generator) -> LoadedPipeline | None:
        """``gen``'s pipeline when it is loaded (never loads)."""
        return self.pipes.get(self.key(gen))

    def get(
        self, gen: Generator, offload: bool = False, peak_memory_gb: float | None = None
    ) -> LoadedPipeline:
        k = self.key(gen)
        if k in self.pipes:
            return self.pipes[k]
        if self.pipes and self._memory_short(peak_memory_gb):
            self.release_all()
        t0 = time.perf_counter()
        loader = self.loader or load_pipeline
        pipe = loader(gen, self.device, self.dtype, self.allow_download, offload)
        self.load_seconds[gen.model] = self.load_seconds.get(gen.model, 0.0) + time.perf_counter() - t0
        self.loads.append(gen.model)
        loaded = LoadedPipeline(pipe, k[1], uses_offload(offload, self.device), pipe.scheduler)
        self.pipes[k] = loaded
        self.peaks[k] = peak_memory_gb
        return loaded

    def _memory_short(self, new_peak: float | None) -> bool:
        total = self.device.total_memory_gb
        if self.device.kind == "cpu":
            if total is None or new_peak is None:
                return False
            held = sum(p or 0.0 for p in self.peaks.values())
            return held + new_peak > 0.8 * total
        if total is None or new_peak is None or any(p is None for p in self.peaks.values()):
            return True
        held = sum(p or 0.0 for p in self.peaks.values())
        return held + new_peak > 0.9 * total

    def release_model(self, model: str) -> None:
        for k in [k for k in self.pipes if k[0] == model]:
            loaded = self.pipes.pop(k)
            self.peaks.pop(k, None)
            self.releases.append(model)
            release(loaded, self.device)

    def release_all(self) -> None:
        for model in {k[0] for k in self.pipes}:
            self.release_model(model)
