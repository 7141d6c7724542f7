"""The router artifact: a self-describing folder holding a trained quality predictor.

Layout::

    DIR/config.json          format, format_version, encoder (id, dim), generators in column order (name,
                             settings hash and settings, cost used in training), cost unit, metric and its
                             scale, budget levels (name -> lambda, with their definition), predictor name and
                             params, training-data card (sources, licenses, citations, prompts, held-out
                             results)
    DIR/weights.safetensors  the predictor's arrays, plus the neighbour index: ``index.rows`` (int64, rows of
                             prompts.json) and ``index.X`` (float16 unit embeddings) of at most INDEX_MAX
                             training prompts (a seeded sample beyond that), for "most similar training
                             prompts"
    DIR/prompts.json         every training prompt in row order (for the index and "was this prompt trained
                             on")

:func:`load_router` reads and validates it; :class:`Router` predicts quality per generator for prompt
embeddings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from catimg.config import Catalog, Generator
from catimg.errors import RouterError, did_you_mean, first_line
from catimg.routing.predictor import Features, Predictor, load_predictor

FORMAT = "catimg-router"
FORMAT_VERSION = 3
#: Older format versions this catimg still reads. Version 2 kept every ``blend``/``lexical`` neighbour's
#: deviations as ``R`` (NaN where not measured); version 3 keeps sums ``S`` and counts ``N`` per prototype,
#: which may be a cluster of prompts (:mod:`catimg.routing.neighbours`).
READABLE_VERSIONS = (2, FORMAT_VERSION)
#: Format versions that this catimg can no longer read, with what changed (for the one-line error).
OLD_FORMATS = {
    1: "version 1 (catimg 0.1.0) held an exact Gaussian process whose weights grow with the square of the "
    "prompts"
}
#: At most this many training prompts are kept in the neighbour index (float16 embeddings).
INDEX_MAX = 32768
INDEX_PREFIX = "index."
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
PROMPTS = "prompts.json"
PACKAGED_ROUTER = Path(__file__).parents[1] / "data" / "router"

#: How the budget levels are defined (stored in every artifact's config.json).
LEVEL_DEFINITION = (
    "value = (q - lo)/(hi - lo) - lambda * cost/max_cost, the generator with the highest value is chosen "
    "per prompt. lambda of low/medium/high is calibrated on the reference prompts so that the mean routed "
    "cost is about 25%/50%/75% of the way from the cheapest generator's cost to the mean cost of max; "
    "max is lambda = 0 (best predicted quality). "
    "Lambdas strictly decrease from low to max, so cost and predicted quality never decrease."
)


class Router:
    """A loaded router artifact (see the module docstring for the files)."""

    def __init__(
        self,
        path: Path,
        config: dict[str, Any],
        predictor: Predictor,
        prompts: list[str] | None,
        index: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.path = path
        self.config = config
        self.predictor = predictor
        self._prompts = prompts
        self._index = index  # (rows into prompts, float16 embeddings)
        self.generators: list[str] = [g["name"] for g in config["generators"]]
        self.metric: str = config["metric"]["name"]
        lo, hi = config["metric"]["scale"]
        self.scale: tuple[float, float] = (float(lo), float(hi))
        self.levels: dict[str, float] = {k: float(v) for k, v in config["budget"]["levels"].items()}
        self.version: int = int(config["format_version"])
        self.data_card: dict[str, Any] = dict(config.get("data_card", {}))
        self.encoder_id: str = config["encoder"]["id"]
        self.encoder_dim: int = int(config["encoder"]["dim"])
        self.cost_unit: str = config.get("cost_unit", "tflops")
        self._hashes = {g["name"]: g.get("settings_hash") for g in config["generators"]}

    # -- what it knows ------------------------------------------------------------------------------------
    @property
    def predictor_name(self) -> str:
        return str(self.config["predictor"]["name"])

    def generator_info(self, name: str) -> dict[str, Any]:
        for g in self.config["generators"]:
            if g["name"] == name:
                return dict(g)
        raise KeyError(name)

    @property
    def costs(self) -> dict[str, float]:
        """The cost of each generator used at training time (in :attr:`cost_unit`)."""
        return {g["name"]: float(g["cost"]) for g in self.config["generators"]}

    def trained_seconds(self, gen: Generator) -> float | None:
        """Seconds per image the router was trained with for a generator of ``gen``'s name (from the
        measurements).

        Only a fallback for showing a cost where catimg has no other (see ``catalog_costs``): a generator
        whose settings changed since training is not routed anyway.
        """
        if gen.name not in self._hashes:
            return None
        s = self.generator_info(gen.name).get("cost_seconds")
        return float(s) if isinstance(s, (int, float)) and s > 0 else None

    def fallback_seconds(self, gens: Iterable[Generator]) -> dict[str, float]:
        """{name: trained seconds} for the generators of ``gens`` the router was trained on with measured
        seconds."""
        return {g.name: s for g in gens if (s := self.trained_seconds(g)) is not None}

    def knows(self, gen: Generator) -> bool:
        """True when ``gen`` is one of the router's columns with the same settings (when a hash was
        recorded)."""
        if gen.name not in self._hashes:
            return False
        h = self._hashes[gen.name]
        return h is None or h == gen.settings_hash()

    def known_as(self, gen: Generator) -> str | None:
        """The router's name for ``gen`` when ``gen`` was renamed in models.toml with its settings unchanged
        (the settings hash matches another of the router's generators); None when the router knows it or has
        no such one."""
        if self.knows(gen):
            return None
        digest = gen.settings_hash()
        for name in self.generators:
            if name != gen.name and self._hashes.get(name) == digest:
                return name
        return None

    def mismatch(self, gen: Generator) -> str | None:
        """Why the router does not know ``gen`` (None when it does)."""
        if gen.name not in self._hashes:
            return f"{gen.name}: not in the router (it knows {', '.join(self.generators)})"
        if self.knows(gen):
            return None
        recorded = self.generator_info(gen.name).get("settings") or {}
        now = gen.settings()
        diffs = [f"{k} {recorded.get(k)!r} -> {now.get(k)!r}" for k in now if recorded.get(k) != now.get(k)]
        return f"{gen.name}: settings changed since training ({'; '.join(diffs) or 'settings hash differs'})"

    def check(self, catalog: Catalog, encoder_id: str) -> None:
        """RouterError when the encoder differs or no enabled generator of the catalog is known to the
        router."""
        if encoder_id != self.encoder_id:
            raise RouterError(
                f"{self.path}: trained on prompt encoder {self.encoder_id}, but catimg uses {encoder_id}; "
                "retrain the router with `catimg train`"
            )
        enabled = catalog.enabled
        if enabled and not any(self.knows(g) for g in enabled):
            why = "; ".join(m for m in (self.mismatch(g) for g in enabled) if m)
            raise RouterError(
                f"{self.path}: knows none of the enabled generators in {catalog.path} ({why}); "
                "train a router for this catalog (`catimg train`) or pass --router"
            )

    # -- predictions --------------------------------------------------------------------------------------
    def _check_emb(self, emb: np.ndarray) -> np.ndarray:
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.encoder_dim:
            raise RouterError(
                f"{self.path}: embeddings of shape {emb.shape} do not match the router's encoder dimension "
                f"{self.encoder_dim}; retrain the router with `catimg train`"
            )
        return emb

    def predict(self, emb: np.ndarray, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Predicted quality (n, g) and its uncertainty (n, g) in metric units, columns in :attr:`generators`
        order, for the prompts and their embeddings.

        The expected quality is kept within the metric's scale: a linear model can extrapolate past the best
        or worst score the metric can give (a CLIPScore below 0), which no image can reach."""
        mean, std = self.predictor.predict(Features.of(self._check_emb(emb), prompts))
        return np.clip(mean.astype(np.float64), *self.scale), std.astype(np.float64)

    @property
    def training_prompts(self) -> list[str]:
        """Every prompt the router was trained on (empty when the artifact has no prompt list)."""
        return list(self._prompts or [])

    def neighbours(self, emb: np.ndarray, k: int = 3) -> list[list[tuple[str, float]]]:
        """The k most similar training prompts per query with their cosine similarity, from the neighbour
        index (every training prompt up to INDEX_MAX of them, a seeded sample beyond)."""
        emb = self._check_emb(emb)
        if self._index is None or self._prompts is None or k <= 0:
            return [[] for _ in range(len(emb))]
        return self._hits(emb, k, np.arange(len(self._index[0])))

    def _hits(self, emb: np.ndarray, k: int, members: np.ndarray) -> list[list[tuple[str, float]]]:
        """Per query, the k nearest of the index entries ``members`` as (training prompt, cosine
        similarity)."""
        from catimg.routing.neighbours import nearest

        assert self._index is not None and self._prompts is not None
        rows, train = self._index
        top = members[nearest(emb, train, k, rows=members)]
        sims = [
            np.asarray(train[t], np.float32) @ e for t, e in zip(top, emb, strict=True)
        ]  # unit vectors: cosine
        return [
            [(self._prompts[int(rows[j])], float(s)) for j, s in zip(t, srow, strict=True)]
            for t, srow in zip(top, sims, strict=True)
        ]

    @property
    def sets(self) -> list[dict[str, Any]]:
        """The measurement sets of a router trained on several (name, metric, range, n_prompts, n_measured,
        rows); empty for a router trained on one set."""
        return list(self.data_card.get("sets", []))

    def sources(self, name: str) -> dict[str, int]:
        """{set or source: prompts measured} behind generator ``name``'s predictions."""
        g = self.generator_info(name)
        if "n_measured_by_set" in g:
            return {k: int(v) for k, v in g["n_measured_by_set"].items()}
        srcs = [s.get("id", "") for s in self.data_card.get("sources", [])]
        return {", ".join(srcs) or "training data": int(g.get("n_measured", 0))}

    def neighbours_by_set(self, emb: np.ndarray, k: int = 1) -> list[dict[str, list[tuple[str, float]]]]:
        """Per query and per measurement set of a joint router, the k most similar training prompts of that
        set (with their cosine similarity); a router of one set gives one entry named after its sources."""
        emb = self._check_emb(emb)
        if self._index is None or self._prompts is None or k <= 0:
            return [{} for _ in range(len(emb))]
        rows = self._index[0]
        sets = self.sets or [
            {"name": ", ".join(self.sources(self.generators[0])), "rows": [0, len(self._prompts)]}
        ]
        out: list[dict[str, list[tuple[str, float]]]] = [{} for _ in range(len(emb))]
        for s in sets:
            members = np.flatnonzero((rows >= s["rows"][0]) & (rows < s["rows"][1]))
            if len(members):
                for q, hits in enumerate(self._hits(emb, k, members)):
                    out[q][s["name"]] = hits
        return out

    def choose(self, mean: np.ndarray, lam: float, costs: np.ndarray | None = None) -> np.ndarray:
        """Column chosen per prompt at price ``lam`` with the training costs (or ``costs``), by
        :mod:`catimg.routing.rule`."""
        from catimg.routing.rule import choose_metric

        c = np.array([self.costs[g] for g in self.generators]) if costs is None else np.asarray(costs, float)
        return choose_metric(mean, c, lam, self.scale)

    def summary(self) -> dict[str, Any]:
        card = self.data_card
        return {
            "path": str(self.path),
            "format_version": self.version,
            "predictor": self.predictor_name,
            "generators": self.generators,
            "metric": self.metric,
            "scale": list(self.scale),
            "levels": self.levels,
            "encoder": self.encoder_id,
            "n_prompts": card.get("n_prompts"),
            "sources": card.get("sources", []),
        }


def neighbour_index(X: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rows, float16 embeddings) of the neighbour index: every row up to INDEX_MAX, else a seeded sample."""
    n = len(X)
    rows = (
        np.arange(n)
        if n <= INDEX_MAX
        else np.sort(np.random.default_rng(seed).choice(n, INDEX_MAX, replace=False))
    )
    return rows.astype(np.int64), np.asarray(X, np.float32)[rows].astype(np.float16)


def save_router(
    out_dir: str | Path,
    config: dict[str, Any],
    predictor: Predictor,
    prompts: list[str],
    index: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write the artifact folder (config.json, weights.safetensors with the neighbour index, prompts.json)."""
    from safetensors.numpy import save_file

    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise RouterError(f"{out}: exists and is not a folder; pass --out with a folder path")
    out.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v) for k, v in predictor.arrays().items()}
    if index is not None:
        arrays[INDEX_PREFIX + "rows"] = np.ascontiguousarray(index[0], dtype=np.int64)
        arrays[INDEX_PREFIX + "X"] = np.ascontiguousarray(index[1], dtype=np.float16)
    save_file(arrays, str(out / WEIGHTS))
    (out / PROMPTS).write_text(json.dumps(prompts, ensure_ascii=False), encoding="utf-8")
    cfg = dict(config)
    cfg["weights"] = WEIGHTS
    (out / CONFIG).write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def _require(cfg: dict[str, Any], where: Path, *keys: str) -> Any:
    cur: Any = cfg
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            raise RouterError(
                f'{where}: missing key "{".".join(keys)}"; the artifact is incomplete, '
                "retrain it with `catimg train`"
            )
        cur = cur[k]
    return cur


def load_router(
    path: str | Path | None = None, encoder_id: str | None = None, encoder_dim: int | None = None
) -> Router:
    """Load and validate a router folder (None: the router bundled with catimg)."""
    folder = _folder(path)
    cfg_path = folder / CONFIG
    cfg = _read_config(cfg_path)
    _check_config(cfg, cfg_path, encoder_id, encoder_dim)
    wpath = folder / str(cfg.get("weights", WEIGHTS))
    arrays = _read_weights(wpath)
    index_rows = arrays.pop(INDEX_PREFIX + "rows", None)
    index_X = arrays.pop(INDEX_PREFIX + "X", None)
    pred = load_predictor(cfg["predictor"]["name"], cfg["predictor"]["params"], arrays, where=str(wpath))
    _check_fit(pred, cfg, wpath)
    prompts = _read_prompts(folder / PROMPTS)
    index = None
    if index_rows is not None and index_X is not None and prompts is not None:
        if index_X.shape != (len(index_rows), int(cfg["encoder"]["dim"])) or (
            len(index_rows) and (index_rows.min() < 0 or index_rows.max() >= len(prompts))
        ):
            raise RouterError(
                f"{wpath}: the neighbour index does not fit {PROMPTS}; copy the whole router folder or "
                "retrain it with `catimg train`"
            )
        index = (index_rows.astype(np.int64), index_X)
    return Router(folder, cfg, pred, prompts, index)


def _folder(path: str | Path | None) -> Path:
    """The router folder that ``path`` names (a folder, or its config.json; None: the bundled router)."""
    folder = PACKAGED_ROUTER if path is None else Path(path).expanduser()
    if not folder.exists():
        raise RouterError(
            f"{folder}: router folder not found; pass --router with a folder written by `catimg train`"
        )
    if not folder.is_dir():
        if folder.name != CONFIG:
            raise RouterError(
                f"{folder}: is a file, not a router folder; pass --router with the folder holding {CONFIG}"
            )
        folder = folder.parent
    if not (folder / CONFIG).is_file():
        raise RouterError(
            f"{folder}: no {CONFIG} in the router folder; pass a folder written by `catimg train`"
        )
    return folder


def _read_config(cfg_path: Path) -> dict[str, Any]:
    """config.json of a router of this catimg's format version."""
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise RouterError(f"{cfg_path}: cannot read ({exc}); retrain the router with `catimg train`") from exc
    except json.JSONDecodeError as exc:
        raise RouterError(
            f"{cfg_path}: corrupt JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "retrain the router with `catimg train`"
        ) from exc
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise RouterError(
            f'{cfg_path}: not a catimg router config (format is not "{FORMAT}"); '
            "pass a folder written by `catimg train`"
        )
    version = cfg.get("format_version")
    if version in OLD_FORMATS:
        raise RouterError(
            f"{cfg_path}: router format {OLD_FORMATS[version]}; this catimg reads version {FORMAT_VERSION}; "
            "retrain it from the same measurements with `catimg train` (or use catimg 0.1.0)"
        )
    if version not in READABLE_VERSIONS:
        raise RouterError(
            f"{cfg_path}: router format version {version!r}, but this catimg reads versions "
            f"{' and '.join(map(str, READABLE_VERSIONS))}; "
            "retrain it with this catimg (`catimg train`) or use the matching catimg version"
        )
    return cfg


def _check_config(
    cfg: dict[str, Any], cfg_path: Path, encoder_id: str | None, encoder_dim: int | None
) -> None:
    """RouterError for a missing key, a malformed generator list, or another encoder than the one in use."""
    for keys in (
        ("encoder", "id"),
        ("encoder", "dim"),
        ("generators",),
        ("metric", "name"),
        ("metric", "scale"),
        ("budget", "levels"),
        ("predictor", "name"),
        ("predictor", "params"),
    ):
        _require(cfg, cfg_path, *keys)
    if (
        not isinstance(cfg["generators"], list)
        or not cfg["generators"]
        or not all(isinstance(g, dict) and "name" in g and "cost" in g for g in cfg["generators"])
    ):
        raise RouterError(
            f'{cfg_path}: "generators" must be a non-empty list of {{name, cost, ...}}; retrain the router'
        )
    if encoder_id is not None and cfg["encoder"]["id"] != encoder_id:
        raise RouterError(
            f"{cfg_path}: trained on prompt encoder {cfg['encoder']['id']}, but catimg uses {encoder_id}; "
            "retrain the router with `catimg train`"
        )
    if encoder_dim is not None and int(cfg["encoder"]["dim"]) != encoder_dim:
        raise RouterError(
            f"{cfg_path}: encoder dimension {cfg['encoder']['dim']} differs from {encoder_dim}; "
            "retrain the router"
        )


def _read_weights(wpath: Path) -> dict[str, np.ndarray]:
    """The arrays of weights.safetensors (the predictor's and the neighbour index)."""
    if not wpath.is_file():
        raise RouterError(
            f"{wpath}: router weights missing; copy the whole router folder or retrain it with `catimg train`"
        )
    try:
        from safetensors.numpy import load_file

        return load_file(str(wpath))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise RouterError(
            f"{wpath}: corrupt router weights ({first_line(exc, limit=120)}); "
            "retrain the router with `catimg train`"
        ) from exc


def _check_fit(pred: Predictor, cfg: dict[str, Any], wpath: Path) -> None:
    """One prediction on a zero embedding: weights that do not fit the config fail here, as one line."""
    n_gen = len(cfg["generators"])
    try:
        zero = np.zeros((1, int(cfg["encoder"]["dim"])), dtype=np.float32)
        mean, std = pred.predict(Features.of(zero, [""]))
        ok = np.shape(mean) == (1, n_gen) and np.shape(std) == (1, n_gen)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise RouterError(
            f"{wpath}: the weights do not fit {CONFIG} ({first_line(exc, limit=120)}); "
            "copy the whole router folder or retrain it with `catimg train`"
        ) from exc
    if not ok:
        raise RouterError(
            f"{wpath}: the weights predict {np.shape(mean)[-1]} generator(s) but {CONFIG} lists {n_gen}; "
            "copy the whole router folder or retrain it with `catimg train`"
        )


def _read_prompts(ppath: Path) -> list[str] | None:
    """The training prompts of prompts.json, or None when the artifact has none."""
    if not ppath.is_file():
        return None
    try:
        prompts: list[str] = json.loads(ppath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RouterError(
            f"{ppath}: corrupt prompt list ({exc}); retrain the router with `catimg train`"
        ) from exc
    return prompts


def unknown_generators(router: Router, catalog: Catalog) -> list[str]:
    """Router columns that are not in the catalog (with a did-you-mean each)."""
    return [f"{g}{did_you_mean(g, catalog.names)}" for g in router.generators if g not in catalog]
