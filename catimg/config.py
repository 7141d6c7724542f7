"""The user's catalog of generators: ``models.toml`` validated once into frozen, typed objects.

A *generator* is a model plus its settings. One table ``[generators.<name>]`` per entry; ``steps`` given as a
list expands into one generator per value (``sdxl@10``, ``sdxl@20`` …) that share the same weights.

Lookup order for the catalog file: ``--models PATH`` > ``$CATIMG_MODELS`` > ``./models.toml`` > the user
config dir (platformdirs) > the default shipped inside the package.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from catimg.device import DTYPES
from catimg.errors import ConfigError, did_you_mean
from catimg.textfiles import read_user_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PACKAGED_MODELS = Path(__file__).parent / "data" / "models.toml"

#: Model families catimg knows how to cost and load. ``family`` may be given explicitly; otherwise it is
#: guessed from the source (Hub id or folder name).
FAMILIES = ("sd1", "sd2", "sdxl", "sdxl-turbo", "pixart", "sd3", "flux", "if", "unknown")

GENERATOR_KEYS = {
    "source": "Hugging Face Hub id (org/name) or a local folder holding a diffusers pipeline",
    "family": f"model family, one of {', '.join(FAMILIES)} (guessed from source when left out)",
    "steps": "number of denoising steps, or a list of them (one generator per value)",
    "guidance": "classifier-free guidance scale (0 or 1 turns guidance off)",
    "width": "image width in pixels, a multiple of 8",
    "height": "image height in pixels, a multiple of 8",
    "scheduler": "diffusers scheduler class name, e.g. EulerDiscreteScheduler (default: the pipeline's own)",
    "dtype": f"{', '.join(DTYPES[:-1])} or {DTYPES[-1]} (auto: fp16/bf16 on CUDA, fp16 on MPS, fp32 on CPU)",
    "variant": "weights variant to load, e.g. fp16",
    "negative_prompt": "default negative prompt",
    "cost_seconds": "explicit cost: seconds per image on your device (overrides the estimate)",
    "cost_tflops": "explicit cost: TFLOPs per image (overrides the analytic count)",
    "enabled": "false keeps the entry without routing to it",
    "safety_checker": "true keeps the pipeline's safety checker where it has one (default false)",
    "note": "free text shown by `catimg models`",
}
TOP_KEYS = {"generators", "defaults"}


@dataclass(frozen=True)
class Generator:
    """One way to make an image: a model and its settings."""

    name: str
    model: str  # the table name: generators sharing it share one set of weights
    source: str
    family: str
    steps: int
    guidance: float
    width: int
    height: int
    scheduler: str | None = None
    dtype: str = "auto"
    variant: str | None = None
    negative_prompt: str = ""
    cost_seconds: float | None = None
    cost_tflops: float | None = None
    enabled: bool = True
    safety_checker: bool = False
    note: str = ""

    @property
    def uses_guidance(self) -> bool:
        """True when classifier-free guidance runs a second (unconditional) pass."""
        return self.guidance > 1.0

    @property
    def is_local_folder(self) -> bool:
        return looks_like_path(self.source)

    def settings(self) -> dict[str, Any]:
        """The settings that change what the generator makes (the identity used for hashes)."""
        return {
            "source": self.source,
            "steps": self.steps,
            "guidance": self.guidance,
            "width": self.width,
            "height": self.height,
            "scheduler": self.scheduler,
            "variant": self.variant,
        }

    def settings_hash(self) -> str:
        """A short stable hash of :meth:`settings`: a changed generator is a new generator."""
        blob = json.dumps(self.settings(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Catalog:
    """The validated catalog: where it came from and its generators in file order."""

    path: Path
    # which lookup rule found it: "--models", "CATIMG_MODELS", "./models.toml", "user config",
    # "packaged default"
    origin: str
    generators: tuple[Generator, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.generators]

    @property
    def enabled(self) -> tuple[Generator, ...]:
        return tuple(g for g in self.generators if g.enabled)

    def get(self, name: str) -> Generator:
        for g in self.generators:
            if g.name == name:
                return g
        raise ConfigError(
            f'{self.path}: no generator named "{name}"{did_you_mean(name, self.names)}; '
            f"known: {', '.join(self.names)}"
        )

    def __contains__(self, name: object) -> bool:
        return any(g.name == name for g in self.generators)


def looks_like_path(source: str) -> bool:
    return (
        source.startswith((".", "/", "~"))
        or os.sep in source.replace("/", "", 1)
        or Path(source).expanduser().is_dir()
    )


def guess_family(source: str) -> str:
    s = source.lower()
    if "turbo" in s and "xl" in s:
        return "sdxl-turbo"
    if "xl" in s and ("stable-diffusion" in s or "sdxl" in s):
        return "sdxl"
    if "pixart" in s:
        return "pixart"
    if "stable-diffusion-3" in s or "sd3" in s:
        return "sd3"
    if "flux" in s:
        return "flux"
    if "deepfloyd" in s or s.startswith("if-") or "/if-" in s:
        return "if"
    if "stable-diffusion-2" in s or "sd2" in s or "sd-2" in s:
        return "sd2"
    if "stable-diffusion-v1" in s or "stable-diffusion-1" in s or "sd1" in s or "sd-1" in s:
        return "sd1"
    return "unknown"


def user_config_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("catimg"))


def find_catalog(explicit: str | Path | None = None) -> tuple[Path, str]:
    """Apply the lookup order and return (path, origin)."""
    if explicit is not None:
        return Path(explicit).expanduser(), "--models"
    env = os.environ.get("CATIMG_MODELS")
    if env:
        return Path(env).expanduser(), "CATIMG_MODELS"
    cwd = Path.cwd() / "models.toml"
    if cwd.is_file():
        return cwd, "./models.toml"
    user = user_config_dir() / "models.toml"
    if user.is_file():
        return user, "user config"
    return PACKAGED_MODELS, "packaged default"


#: Characters a generator name may not contain: '@' marks a steps value (sdxl@20), ',' separates names in
#: options (--generators a,b). Spaces, '/' and the like are fine (public sets name generators "SD 1.5" or by
#: their Hub id); image file names take a sanitised form (:func:`safe_name`).
NAME_RESERVED = "@,"


def safe_name(name: str) -> str:
    """The form of a generator name that image file names use: runs of anything but letters, digits and
    ``@._+-`` become one ``_``."""
    return re.sub(r"[^A-Za-z0-9@._+-]+", "_", name)


def bad_name(name: str) -> bool:
    """Whether ``name`` cannot be a generator name (see NAME_RESERVED)."""
    return (
        not name.strip()
        or name != name.strip()
        or any(c in NAME_RESERVED or not c.isprintable() for c in name)
    )


def _check_file_names(path: Path, gens: list[Generator]) -> None:
    """ConfigError when two generator names give the same image file name ("SD 1.5" and "SD_1.5")."""
    seen: dict[str, str] = {}
    for g in gens:
        other = seen.setdefault(safe_name(g.name), g.name)
        if other != g.name:
            raise ConfigError(
                f'{path}: generators "{other}" and "{g.name}" would name their image files alike '
                f'("{safe_name(g.name)}"); rename one of them'
            )


def load_catalog(explicit: str | Path | None = None) -> Catalog:
    """Find, read and validate the catalog (see :func:`find_catalog` for the lookup order)."""
    path, origin = find_catalog(explicit)
    text = read_user_text(
        path, "models file", ConfigError, hint=f"create it or pass --models PATH (found through {origin})"
    )
    return parse_catalog(text, path, origin)


def parse_catalog(text: str, path: Path, origin: str = "--models") -> Catalog:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        if "(at end of document)" in msg:  # tomllib names no line there: give the last one
            lines = text.splitlines() or [""]
            msg = msg.replace(
                "(at end of document)",
                f"(at the end of the file: line {len(lines)}, column {len(lines[-1]) + 1})",
            )
        raise ConfigError(f"{path}: invalid TOML: {msg}; fix the file at that line and column") from exc
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(
                f'{path}: unknown top-level key "{key}"{did_you_mean(key, TOP_KEYS)}; '
                "put generators in [generators.<name>] tables"
            )
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: [defaults] must be a table of generator settings")
    _check_keys(path, "defaults", defaults, allow_source=True)
    tables = data.get("generators")
    if not tables or not isinstance(tables, dict):
        raise ConfigError(f"{path}: no [generators.<name>] tables; add at least one generator")

    gens: list[Generator] = []
    seen: dict[str, str] = {}
    for model, table in tables.items():
        where = f"[generators.{model}]"
        if not isinstance(table, dict):
            raise ConfigError(
                f'{path}: {where} must be a table, e.g. [generators.{model}] with source = "org/name"'
            )
        if bad_name(model):
            fixed = "".join("-" if c in NAME_RESERVED or not c.isprintable() else c for c in model.strip())
            raise ConfigError(
                f"{path}: {where}: a generator name may not be empty, start or end with spaces, or contain "
                f"'@' (it marks steps: sdxl@20), ',' (it separates names in options) or control characters; "
                f'rename it, e.g. [generators."{fixed or "my-generator"}"], and use that name in '
                "measurements files too"
            )
        merged = {**defaults, **table}
        _check_keys(path, where, merged)
        for g in _expand(path, where, model, merged):
            if g.name in seen:
                raise ConfigError(
                    f'{path}: {where}: duplicate generator name "{g.name}" (also from {seen[g.name]})'
                )
            seen[g.name] = where
            gens.append(g)
    _check_file_names(path, gens)
    if not any(g.enabled for g in gens):
        raise ConfigError(
            f"{path}: every generator has enabled = false, so nothing can be routed; enable at least one"
        )
    return Catalog(path=path, origin=origin, generators=tuple(gens))


def _check_keys(path: Path, where: str, table: dict[str, Any], allow_source: bool = True) -> None:
    for key in table:
        if key not in GENERATOR_KEYS:
            raise ConfigError(
                f'{path}: {where}: unknown key "{key}"{did_you_mean(key, GENERATOR_KEYS)}; '
                f"allowed: {', '.join(GENERATOR_KEYS)}"
            )


def _typed(path: Path, where: str, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if (
        isinstance(value, bool)
        and kind is not bool
        and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise ConfigError(f"{path}: {where}: {key} = {value!r} must be {what}")
    if not isinstance(value, kind):
        raise ConfigError(f"{path}: {where}: {key} = {value!r} must be {what}")
    return value


def _positive_int(path: Path, where: str, key: str, value: Any) -> int:
    _typed(path, where, key, value, int, "a positive whole number")
    if value <= 0:
        raise ConfigError(f"{path}: {where}: {key} = {value} must be a positive whole number")
    return int(value)


def _source(path: Path, where: str, t: dict[str, Any]) -> str:
    """The ``source`` of a model table: a Hub id, or a folder (relative to the models file's folder)."""
    if "source" not in t:
        raise ConfigError(
            f'{path}: {where}: missing key "source"; give a Hub id (org/name) or a local folder'
        )
    source = str(
        _typed(path, where, "source", t["source"], str, "a Hub id or a folder path (a string)")
    ).strip()
    if not source:
        raise ConfigError(f"{path}: {where}: source is empty; give a Hub id (org/name) or a local folder")
    if looks_like_path(source) and not Path(source).expanduser().is_absolute():
        source = str((path.parent / Path(source).expanduser()).resolve())
    return source


def _family(path: Path, where: str, t: dict[str, Any], source: str) -> str:
    """The ``family`` key, or the family guessed from the source."""
    family = t.get("family")
    if family is None:
        family = guess_family(source)
    else:
        _typed(path, where, "family", family, str, "a string")
        if family not in FAMILIES:
            raise ConfigError(
                f'{path}: {where}: family = "{family}" is unknown{did_you_mean(family, FAMILIES)}; '
                f"use one of {', '.join(FAMILIES)}"
            )
    return str(family)


def _steps(path: Path, where: str, t: dict[str, Any]) -> list[int]:
    """``steps``: one count or a list of distinct counts (one generator each)."""
    steps_raw = t.get("steps", 30)
    if isinstance(steps_raw, list):
        if not steps_raw:
            raise ConfigError(f"{path}: {where}: steps = [] is empty; give a number or a list of numbers")
        steps = [_positive_int(path, where, "steps", s) for s in steps_raw]
        if len(set(steps)) != len(steps):
            raise ConfigError(f"{path}: {where}: steps = {steps_raw} repeats a value; list each value once")
    else:
        steps = [_positive_int(path, where, "steps", steps_raw)]
    return steps


def _explicit_costs(path: Path, where: str, t: dict[str, Any]) -> dict[str, float | None]:
    """``cost_seconds`` and ``cost_tflops`` (None where not given)."""
    costs: dict[str, float | None] = {}
    for key in ("cost_seconds", "cost_tflops"):
        raw = t.get(key)
        value: float | None = None
        if raw is not None:
            _typed(path, where, key, raw, (int, float), "a positive number")
            if not raw > 0:
                raise ConfigError(f"{path}: {where}: {key} = {raw} must be a positive number")
            value = float(raw)
        costs[key] = value
    return costs


def _expand(path: Path, where: str, model: str, t: dict[str, Any]) -> list[Generator]:
    source = _source(path, where, t)
    family = _family(path, where, t, source)
    steps = _steps(path, where, t)
    guidance = float(_typed(path, where, "guidance", t.get("guidance", 7.5), (int, float), "a number"))
    if guidance < 0:
        raise ConfigError(f"{path}: {where}: guidance = {guidance} must be 0 or more")
    default_size = 1024 if family in ("sdxl", "pixart", "sd3", "flux") else 512
    width = _positive_int(path, where, "width", t.get("width", default_size))
    height = _positive_int(path, where, "height", t.get("height", default_size))
    for key, v in (("width", width), ("height", height)):
        if v % 8:
            raise ConfigError(f"{path}: {where}: {key} = {v} must be a multiple of 8")
    scheduler = t.get("scheduler")
    if scheduler is not None:
        _typed(path, where, "scheduler", scheduler, str, "a diffusers scheduler class name (a string)")
    dtype = _typed(path, where, "dtype", t.get("dtype", "auto"), str, f"one of {', '.join(DTYPES)}")
    if dtype not in DTYPES:
        raise ConfigError(
            f'{path}: {where}: dtype = "{dtype}" is unknown{did_you_mean(dtype, DTYPES)}; use one '
            f"of {', '.join(DTYPES)}"
        )
    variant = t.get("variant")
    if variant is not None:
        _typed(path, where, "variant", variant, str, 'a string such as "fp16"')
    negative = _typed(path, where, "negative_prompt", t.get("negative_prompt", ""), str, "a string")
    costs = _explicit_costs(path, where, t)
    enabled = _typed(path, where, "enabled", t.get("enabled", True), bool, "true or false")
    safety = _typed(path, where, "safety_checker", t.get("safety_checker", False), bool, "true or false")
    note = _typed(path, where, "note", t.get("note", ""), str, "a string")
    if len(steps) > 1 and (costs["cost_seconds"] is not None or costs["cost_tflops"] is not None):
        raise ConfigError(
            f"{path}: {where}: an explicit cost applies to one step count; split steps = {steps} into "
            "separate tables"
        )
    out = []
    for s in steps:
        name = f"{model}@{s}" if len(steps) > 1 else model
        out.append(
            Generator(
                name=name,
                model=model,
                source=source,
                family=family,
                steps=s,
                guidance=guidance,
                width=width,
                height=height,
                scheduler=scheduler,
                dtype=dtype,
                variant=variant,
                negative_prompt=negative,
                cost_seconds=costs["cost_seconds"],
                cost_tflops=costs["cost_tflops"],
                enabled=enabled,
                safety_checker=safety,
                note=note,
            )
        )
    return out
