"""Scorers: automatic image quality metrics that a calibration campaign records.

A :class:`Scorer` has a ``name`` (the registry key), the ``metric`` it stores, the metric's ``scale`` (lo, hi)
and ``score(images, prompts) -> list[float]``. Scorers are registered in :data:`SCORERS` with a factory, so
that others (an aesthetic head, ImageReward …) can be added with :func:`register_scorer` without touching the
campaign. Built in:

``clipscore``
    100 · max(cos(image, text), 0) with transformers' ``CLIPModel`` (Hessel et al., 2021, scaled by 100 as
    torchmetrics does). Default checkpoint ``openai/clip-vit-large-patch14``.
``pickscore``
    exp(logit_scale) · cos(image, text) with the PickScore checkpoint (Kirstain et al., 2023), a CLIP-H model
    fine-tuned on human preferences; its tokenizer and image processor come from the LAION CLIP-H repository.

Checkpoints are Hub ids, read from the Hugging Face cache only (never downloaded here), or local folders. A
missing checkpoint fails within a second with a :class:`~catimg.errors.WeightsMissingError` naming it and the
``hf download`` command that fetches it (:func:`check_scorer` checks without importing torch); a checkpoint
that is there but cannot be loaded (cut-short or corrupt weights) raises the same error when the scorer is
built.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catimg.errors import InputError, WeightsMissingError, did_you_mean, first_line

DEFAULT_METRIC = "clipscore"


class Scorer:
    """Interface: subclasses set the attributes and implement :meth:`score`."""

    name: str = ""
    metric: str = ""
    scale: tuple[float, float] = (0.0, 1.0)
    model_id: str = ""  # the checkpoint (Hub id or folder) that produced the scores

    def score(
        self, images: Sequence[Any], prompts: Sequence[str]
    ) -> list[float]:  # pragma: no cover - interface
        """One score per (image, prompt) pair, in metric units."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the model (optional)."""


@dataclass(frozen=True)
class ScorerSpec:
    """A registry entry: how to build a scorer and what it needs."""

    name: str
    factory: Callable[[Path, str, str], Scorer]  # (checkpoint folder, model id, torch device) -> Scorer
    default_model: str
    description: str
    scale: tuple[float, float]
    #: Extra checkpoints that must be present (e.g. a tokenizer repo), given as Hub ids or folders.
    requires: tuple[str, ...] = ()


SCORERS: dict[str, ScorerSpec] = {}


def register_scorer(spec: ScorerSpec) -> None:
    """Add (or replace) a scorer in the registry."""
    SCORERS[spec.name] = spec


def available_metrics() -> list[str]:
    return sorted(SCORERS)


def get_spec(metric: str) -> ScorerSpec:
    if metric not in SCORERS:
        raise InputError(
            f'unknown metric "{metric}"{did_you_mean(metric, SCORERS)}; available: '
            f"{', '.join(available_metrics())}"
        )
    return SCORERS[metric]


# --- finding checkpoints offline ---------------------------------------------------------------------------

_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def _is_path(model: str) -> bool:
    return (
        model.startswith((".", "/", "~"))
        or os.sep in model.replace("/", "", 1)
        or Path(model).expanduser().exists()
    )


def resolve_checkpoint(model: str, metric: str, *, need_weights: bool = True) -> Path:
    """The local folder of a scorer checkpoint (a folder, or a Hub id in the HF cache), checked offline.

    Raises :class:`WeightsMissingError` (one line, naming the checkpoint and how to fetch it) when absent.
    """
    if _is_path(model):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise WeightsMissingError(
                f"{folder}: scorer checkpoint folder for metric {metric} not found; "
                "pass --scorer-model with a folder "
                "holding config.json and the weights"
            )
        if not (folder / "config.json").is_file() and need_weights:
            raise WeightsMissingError(
                f"{folder}: not a transformers checkpoint for metric {metric} (no config.json); "
                "pass --scorer-model "
                "with a folder saved by save_pretrained"
            )
        if need_weights and not any((folder / f).is_file() for f in _WEIGHT_FILES):
            raise WeightsMissingError(
                f"{folder}: scorer checkpoint for metric {metric} has no weights file; re-save it"
            )
        return folder
    from huggingface_hub import snapshot_download

    cache = hub_cache_dir()
    try:
        folder = Path(snapshot_download(model, local_files_only=True, cache_dir=str(cache)))
    except Exception:  # LocalEntryNotFoundError, invalid repo id, …: all mean "not here"
        folder = None  # type: ignore[assignment]
    ok = folder is not None and (not need_weights or any((folder / f).exists() for f in _WEIGHT_FILES))
    if not ok:
        raise WeightsMissingError(
            f'scorer checkpoint "{model}" for metric {metric} is not in the Hugging Face cache ({cache}); '
            f"fetch it once with `hf download {model}` where the Hub is reachable, "
            "or pass --scorer-model FOLDER"
        )
    return folder


def refetch_hint(model: str) -> str:
    """What to do about a checkpoint that is there but cannot be loaded."""
    if _is_path(model):
        return "pass --scorer-model with a complete CLIP folder (saved by save_pretrained)"
    return (
        f"fetch it again with `hf download {model} --force-download` where the Hub is reachable, "
        "or pass --scorer-model FOLDER"
    )


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (HF_HUB_CACHE > HF_HOME/hub > default)."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(HF_HUB_CACHE)


def check_scorer(metric: str, model: str | None = None) -> Path:
    """Fast offline check that a scorer can be built; returns the checkpoint folder."""
    spec = get_spec(metric)
    folder = resolve_checkpoint(model or spec.default_model, metric)
    if not _has_processor(folder):
        for extra in spec.requires:
            resolve_checkpoint(extra, metric, need_weights=False)
    return folder


def _has_processor(folder: Path) -> bool:
    return (folder / "preprocessor_config.json").is_file() and any(
        (folder / f).is_file() for f in ("tokenizer.json", "vocab.json", "tokenizer_config.json")
    )


def load_scorer(metric: str = DEFAULT_METRIC, model: str | None = None, device: str = "cpu") -> Scorer:
    """Build the scorer for ``metric`` from ``model`` (a Hub id in the cache, or a folder; default per
    metric)."""
    spec = get_spec(metric)
    model_id = model or spec.default_model
    folder = check_scorer(metric, model_id)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return spec.factory(folder, model_id, device)


# --- CLIP-family scorers -----------------------------------------------------------------------------------


def _quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


class CLIPFamilyScorer(Scorer):
    """Cosine similarity of CLIP image and text embeddings, mapped by ``mode``.

    ``mode="clipscore"``: 100 · max(cos, 0). ``mode="logit"``: exp(logit_scale) · cos (PickScore).
    """

    batch_size = 16

    def __init__(
        self,
        folder: Path,
        model_id: str,
        device: str,
        *,
        name: str,
        mode: str,
        scale: tuple[float, float],
        processor_source: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoTokenizer, CLIPModel

        _quiet_transformers()
        self.name = name
        self.metric = name
        self.scale = scale
        self.model_id = model_id
        self.mode = mode
        self.device = device
        proc = folder
        if not _has_processor(folder) and processor_source is not None:
            proc = resolve_checkpoint(processor_source, name, need_weights=False)
        try:
            dtype = torch.float16 if device.startswith("cuda") else torch.float32
            self.model = CLIPModel.from_pretrained(str(folder), dtype=dtype).to(device).eval()  # type: ignore[arg-type]
            self.tokenizer = AutoTokenizer.from_pretrained(str(proc))
            self.processor = _image_processor(proc)
        except Exception as exc:  # noqa: BLE001 - OSError, ValueError, safetensors' SafetensorError (cut-short file) …
            raise WeightsMissingError(
                f"{folder}: cannot load scorer checkpoint {model_id} for metric {name}, "
                "corrupt or incomplete "
                f"({first_line(exc, limit=160)}); {refetch_hint(model_id)}"
            ) from exc
        self.max_length = int(getattr(self.model.config.text_config, "max_position_embeddings", 77))

    def score(self, images: Sequence[Any], prompts: Sequence[str]) -> list[float]:
        import torch

        if len(images) != len(prompts):
            raise ValueError(f"score(): {len(images)} images but {len(prompts)} prompts")
        out: list[float] = []
        for i in range(0, len(images), self.batch_size):
            imgs = [im.convert("RGB") for im in images[i : i + self.batch_size]]
            txt = list(prompts[i : i + self.batch_size])
            pixels = self.processor(images=imgs, return_tensors="pt")["pixel_values"].to(
                self.device, self.model.dtype
            )
            tokens = self.tokenizer(
                txt, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            tokens = {k: v.to(self.device) for k, v in tokens.items()}
            with torch.inference_mode():
                img = _features(self.model.get_image_features(pixel_values=pixels)).float()
                tex = _features(self.model.get_text_features(**tokens)).float()
                img = img / img.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                tex = tex / tex.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                cos = (img * tex).sum(dim=-1)
                if self.mode == "logit":
                    vals = self.model.logit_scale.exp().float() * cos
                else:
                    vals = 100.0 * cos.clamp_min(0.0)
            out.extend(float(v) for v in vals.cpu())
        return out

    def close(self) -> None:
        del self.model


def _features(out: Any) -> Any:
    """transformers 5 returns a model output from get_*_features (projected vector in pooler_output)."""
    if hasattr(out, "pooler_output") and out.pooler_output is not None:
        return out.pooler_output
    return out


def _image_processor(folder: Path) -> Any:
    import transformers

    cls = getattr(
        transformers, "CLIPImageProcessorPil", None
    )  # no torchvision here: the PIL backend, quietly
    if cls is not None:
        try:
            return cls.from_pretrained(str(folder))
        except Exception:  # noqa: BLE001 - fall back to the auto class
            pass
    return transformers.AutoImageProcessor.from_pretrained(str(folder))


register_scorer(
    ScorerSpec(
        name="clipscore",
        factory=lambda folder, model_id, device: CLIPFamilyScorer(
            folder, model_id, device, name="clipscore", mode="clipscore", scale=(0.0, 100.0)
        ),
        default_model="openai/clip-vit-large-patch14",
        description="CLIPScore: 100 x max(cosine(image, prompt), 0) with a CLIP model",
        scale=(0.0, 100.0),
    )
)

PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
register_scorer(
    ScorerSpec(
        name="pickscore",
        factory=lambda folder, model_id, device: CLIPFamilyScorer(
            folder,
            model_id,
            device,
            name="pickscore",
            mode="logit",
            scale=(0.0, 30.0),
            processor_source=PICKSCORE_PROCESSOR,
        ),
        default_model="yuvalkirstain/PickScore_v1",
        description="PickScore: human-preference CLIP-H, exp(logit_scale) x cosine",
        scale=(0.0, 30.0),
        requires=(PICKSCORE_PROCESSOR,),
    )
)
