"""Analytic cost of one image, from pipeline configurations alone (no weights are read).

The count: the denoiser (UNet or transformer) once per step at the configured resolution, twice where
classifier-free guidance runs an unconditional pass (batched, so the op count does not double), plus the text
encoder(s) (prompt and negative prompt) and one VAE decode.

How the numbers are obtained:

* **Local folder** (a diffusers pipeline): every component is instantiated from its ``config.json`` on torch's
  ``meta`` device (no memory, no weights) and one forward pass is run under
  :class:`torch.utils.flop_counter.FlopCounterMode` together with a small dispatch mode that counts ops
  (kernel launches) and the peak of live activation bytes. Results are cached on disk by config hash and size,
  so only the first ``explain`` on a new folder pays for importing diffusers.
* **Known Hub family with no local files**: the same count was run once on the family's real configs (key
  numbers in :data:`FAMILY_CONFIGS`, reproduced with ``python -m catimg.flops --family-table``) and stored in
  :data:`FAMILY_TABLE` at the family's reference size. Another size scales the non-attention FLOPs with the
  number of pixels and the self-attention FLOPs with its square.

FLOPs are counted as torch does: 2 per multiply-accumulate, attention score and value products included
(``attention`` is reported separately; CATImage's 11.97 TFLOPs/step for SDXL leaves it out).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from catimg.config import Generator
from catimg.errors import ConfigError

TERA = 1e12
GB = 1024**3
#: ops a scheduler step and the guidance combination add per denoising step (outside the denoiser)
SCHEDULER_OPS_PER_STEP = 25
COUNT_FORMAT = 1


@dataclass(frozen=True)
class ComponentCount:
    """One forward pass of one component, at batch 1 (denoiser) or per prompt (text) or per image (VAE)."""

    tflops: float
    attention_tflops: float  # part of tflops in attention score/value products (scales with tokens²)
    ops: int  # aten ops dispatched (≈ kernel launches on a GPU)
    params: int
    activation_bytes: int  # peak of live activation bytes at fp32 during the pass


@dataclass(frozen=True)
class PipelineCount:
    """Counted components of a pipeline at one resolution."""

    width: int
    height: int
    denoiser: ComponentCount  # batch 1
    text: tuple[ComponentCount, ...]
    vae_decode: ComponentCount
    denoiser_kind: str  # class name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> PipelineCount:
        return PipelineCount(
            width=d["width"],
            height=d["height"],
            denoiser=ComponentCount(**d["denoiser"]),
            text=tuple(ComponentCount(**t) for t in d["text"]),
            vae_decode=ComponentCount(**d["vae_decode"]),
            denoiser_kind=d["denoiser_kind"],
        )


@dataclass(frozen=True)
class FlopEstimate:
    """FLOPs, ops and memory of one image from one generator."""

    steps: int
    passes: int  # denoiser passes per step: 2 with classifier-free guidance
    denoiser_tflops: float  # one pass, batch 1
    denoiser_attention_tflops: float
    text_tflops: float  # all text encoders, prompt and (with guidance) negative prompt
    vae_tflops: float
    denoiser_ops: int
    fixed_ops: int  # text encoders + VAE decode
    params: dict[str, int] = field(default_factory=dict)  # component -> parameters
    denoiser_activation_bytes: int = 0  # fp32, batch 1
    vae_activation_bytes: int = 0  # fp32
    source: str = ""

    @property
    def step_tflops(self) -> float:
        """TFLOPs of one denoising step (both guidance passes)."""
        return self.denoiser_tflops * self.passes

    @property
    def fixed_tflops(self) -> float:
        return self.text_tflops + self.vae_tflops

    @property
    def total_tflops(self) -> float:
        return self.step_tflops * self.steps + self.fixed_tflops

    @property
    def kernels_per_image(self) -> int:
        return (self.denoiser_ops + SCHEDULER_OPS_PER_STEP) * self.steps + self.fixed_ops

    def weights_gb(self, dtype: str) -> float:
        return sum(self.params.values()) * _bytes(dtype) / GB

    def denoiser_gb(self, dtype: str) -> float:
        return self.params.get("denoiser", 0) * _bytes(dtype) / GB

    def largest_component_gb(self, dtype: str) -> float:
        return max(self.params.values(), default=0) * _bytes(dtype) / GB

    def activation_gb(self, dtype: str) -> float:
        scale = _bytes(dtype) / 4
        return max(self.denoiser_activation_bytes * self.passes, self.vae_activation_bytes) * scale / GB

    def peak_memory_gb(self, dtype: str) -> float:
        """Weights of every component resident plus the largest activation peak, plus ~0.5 GB of context."""
        return self.weights_gb(dtype) + self.activation_gb(dtype) + 0.5

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            step_tflops=self.step_tflops,
            total_tflops=self.total_tflops,
            kernels_per_image=self.kernels_per_image,
        )
        return d


def _bytes(dtype: str) -> int:
    return 4 if dtype == "fp32" else 2


# ----------------------------------------------------------------------------------------------- estimates


def estimate_flops(gen: Generator) -> FlopEstimate:
    """The FLOP estimate of one image from ``gen``: counted from a local folder, else the family table.

    ConfigError when neither is possible (unknown family with a Hub source, unreadable folder configs).
    """
    passes = 2 if gen.uses_guidance else 1
    if gen.is_local_folder:
        folder = Path(gen.source).expanduser()
        count = count_pipeline_cached(folder, gen.width, gen.height)
        return _from_count(count, gen.steps, passes, source=f"counted from {folder}")
    ref = FAMILY_TABLE.get(gen.family)
    if ref is None:
        snapshot = _cached_snapshot(gen.source)
        if snapshot is not None:  # an unknown family whose pipeline is in the Hugging Face cache: count it
            count = count_pipeline_cached(snapshot, gen.width, gen.height)
            return _from_count(count, gen.steps, passes, source=f"counted from {snapshot}")
        raise ConfigError(
            f'[generators.{gen.model}]: no FLOP estimate for source "{gen.source}" '
            f'(family "{gen.family}" has no '
            "built-in numbers and the source is not a local folder)"
        )
    width, height = gen.width, gen.height
    note = ""
    if gen.family == "pixart":  # resolution binning: computed at ~1024² whatever the requested size
        width, height = binned_size(1024, width, height)
        if (width, height) != (gen.width, gen.height):
            note = f" (PixArt computes at its {width}×{height} bin)"
    count = scale_count(ref, width, height)
    return _from_count(count, gen.steps, passes, source=f"built-in {gen.family} numbers{note}")


def _cached_snapshot(repo_id: str) -> Path | None:
    try:
        from catimg.pipelines import hub_snapshot
    except ImportError:  # pragma: no cover
        return None
    snap = hub_snapshot(repo_id)
    return snap if snap is not None and (snap / "model_index.json").is_file() else None


def _from_count(count: PipelineCount, steps: int, passes: int, source: str) -> FlopEstimate:
    d = count.denoiser
    text_mult = passes  # the negative prompt is encoded too when guidance is on
    params = {"denoiser": d.params, "vae": count.vae_decode.params}
    for i, t in enumerate(count.text):
        params[f"text_encoder{'' if i == 0 else '_' + str(i + 1)}"] = t.params
    return FlopEstimate(
        steps=steps,
        passes=passes,
        denoiser_tflops=d.tflops,
        denoiser_attention_tflops=d.attention_tflops,
        text_tflops=sum(t.tflops for t in count.text) * text_mult,
        vae_tflops=count.vae_decode.tflops,
        denoiser_ops=d.ops,
        fixed_ops=sum(t.ops for t in count.text) + count.vae_decode.ops,
        params=params,
        denoiser_activation_bytes=d.activation_bytes,
        vae_activation_bytes=count.vae_decode.activation_bytes,
        source=source,
    )


def scale_count(ref: PipelineCount, width: int, height: int) -> PipelineCount:
    """Scale a counted reference to another size: linear parts with pixels, self-attention with pixels²."""
    r = (width * height) / (ref.width * ref.height)

    def sc(c: ComponentCount, attn_power: float = 2.0) -> ComponentCount:
        lin = c.tflops - c.attention_tflops
        return ComponentCount(
            tflops=lin * r + c.attention_tflops * r**attn_power,
            attention_tflops=c.attention_tflops * r**attn_power,
            ops=c.ops,
            params=c.params,
            activation_bytes=int(c.activation_bytes * r),
        )

    return PipelineCount(
        width=width,
        height=height,
        denoiser=sc(ref.denoiser),
        text=ref.text,
        vae_decode=sc(ref.vae_decode),
        denoiser_kind=ref.denoiser_kind,
    )


# ----------------------------------------------------------------------------------------------- counting


class _Counter:
    """A dispatch mode that counts ops and tracks the peak of live (non-alias) output bytes."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class Mode(TorchDispatchMode):
            def __init__(self) -> None:
                # named, not super(): mypy's untyped_calls_exclude (pyproject) then lets this typed code call
                # torch's unannotated TorchDispatchMode.__init__
                TorchDispatchMode.__init__(self)

            def __torch_dispatch__(
                self,
                func: Any,
                types: Any,
                args: tuple[Any, ...] = (),
                kwargs: dict[str, Any] | None = None,
            ) -> Any:
                out = func(*args, **(kwargs or {}))
                counter._record(func, out)
                return out

        self.mode = Mode()
        self.ops = 0
        self.live = 0
        self.peak = 0

    def _record(self, func: Any, out: Any) -> None:
        import torch

        self.ops += 1
        try:
            aliasing = any(r.alias_info is not None for r in func._schema.returns)
        except AttributeError:  # pragma: no cover
            aliasing = False
        if aliasing:
            return
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for t in outs:
            if isinstance(t, torch.Tensor):
                n = t.numel() * t.element_size()
                self.live += n
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, n)

    def _free(self, n: int) -> None:
        self.live -= n


def count_forward(fn: Callable[[], Any], params: int) -> ComponentCount:
    """Run ``fn`` (a forward pass on meta tensors) and count FLOPs, attention FLOPs, ops and peak activations.

    ``scaled_dot_product_attention`` is intercepted and counted as one fused kernel (as flash /
    memory-efficient attention runs on GPUs and recent CPUs): 4·batch·heads·Lq·Lk·d FLOPs and no Lq×Lk score
    matrix in memory. On meta tensors torch would otherwise decompose it into bmm + softmax.
    """
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode
    from torch.utils.flop_counter import FlopCounterMode

    counter = _Counter()
    attention = [0]

    class FusedAttention(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            kwargs = kwargs or {}
            if func is F.scaled_dot_product_attention:
                q, k, v = args[0], args[1], args[2]
                batch = 1
                for n in q.shape[:-2]:
                    batch *= int(n)
                lq, lk, e, ev = int(q.shape[-2]), int(k.shape[-2]), int(q.shape[-1]), int(v.shape[-1])
                attention[0] += 2 * batch * lq * lk * (e + ev)
                return torch.empty(*q.shape[:-1], ev, dtype=q.dtype, device=q.device)
            return func(*args, **kwargs)

    with torch.no_grad(), FlopCounterMode(display=False) as fc, counter.mode, FusedAttention():
        out = fn()
        del out
    total = fc.get_total_flops() + attention[0]
    return ComponentCount(
        tflops=total / TERA,
        attention_tflops=attention[0] / TERA,
        ops=counter.ops,
        params=params,
        activation_bytes=int(counter.peak),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: missing; a diffusers pipeline folder needs it for a FLOP estimate"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read it as JSON ({exc})") from exc


def pipeline_configs(folder: Path) -> dict[str, Any]:
    """``{"model_index": ..., "<component>": (library, class, config)}`` for every component with a config."""
    index = _read_json(folder / "model_index.json")
    out: dict[str, Any] = {"model_index": index}
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or len(spec) != 2 or spec[0] is None:
            continue
        cfg_path = folder / name / "config.json"
        if cfg_path.is_file():
            out[name] = (spec[0], spec[1], _read_json(cfg_path))
        elif name.startswith("tokenizer"):
            tok = folder / name / "tokenizer_config.json"
            out[name] = (spec[0], spec[1], _read_json(tok) if tok.is_file() else {})
    return out


def count_pipeline_cached(folder: Path, width: int, height: int) -> PipelineCount:
    """:func:`count_pipeline`, cached on disk by the configs' hash and the size."""
    configs = pipeline_configs(folder)
    blob = json.dumps([configs, width, height, COUNT_FORMAT], sort_keys=True, default=str).encode()
    key = hashlib.sha256(blob).hexdigest()[:20]
    cache = _cache_file()
    data: dict[str, Any] = {}
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
        if key in data:
            return PipelineCount.from_dict(data[key])
    except (OSError, ValueError, KeyError, TypeError):
        data = {}
    count = count_from_configs(configs, width, height, where=str(folder))
    data[key] = count.to_dict()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(cache)
    except OSError:
        pass  # a cache is a convenience
    return count


def _cache_file() -> Path:
    from catimg.paths import cache_dir

    return cache_dir() / "flops.json"


def count_pipeline(folder: str | Path, width: int, height: int) -> PipelineCount:
    """Count the pipeline in ``folder`` at ``width``×``height`` from its configs, on the meta device."""
    folder = Path(folder)
    return count_from_configs(pipeline_configs(folder), width, height, where=str(folder))


def count_from_configs(
    configs: dict[str, Any], width: int, height: int, where: str = "pipeline"
) -> PipelineCount:
    """Count from ``{"model_index": ..., component: (library, class, config)}`` (see
    :func:`pipeline_configs`)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    den_name = "unet" if "unet" in configs else "transformer" if "transformer" in configs else None
    if den_name is None or "vae" not in configs:
        raise ConfigError(f"{where}: no unet/ or transformer/ and vae/ configs; cannot count its FLOPs")
    width, height = pipeline_size(configs, width, height)
    vae_lib, vae_cls, vae_cfg = configs["vae"]
    vae = _build(vae_lib, vae_cls, vae_cfg, where, "vae")
    scale = 2 ** (len(vae_cfg.get("block_out_channels", [1, 1, 1, 1])) - 1)
    lat_h, lat_w = height // scale, width // scale
    latent_ch = int(vae_cfg.get("latent_channels", 4))

    texts: list[tuple[Any, int]] = []
    for name in sorted(k for k in configs if k.startswith("text_encoder")):
        lib, cls, cfg = configs[name]
        model = _build(lib, cls, cfg, where, name)
        tok_name = name.replace("text_encoder", "tokenizer")
        tok_cfg = configs.get(tok_name, (None, None, {}))[2]
        max_len = tok_cfg.get("model_max_length")
        if "t5" in cls.lower():  # the pipelines cap T5 prompts: PixArt at 120 tokens, SD3 at 256
            max_len = 256 if configs[den_name][1] == "SD3Transformer2DModel" else 120
        elif not isinstance(max_len, int) or max_len > 4096:
            max_len = 77
        texts.append((model, max_len))
    text_counts = [_count_text(m, n) for m, n in texts]
    text_dims = [(m, n) for m, n in texts]

    den_lib, den_cls, den_cfg = configs[den_name]
    den = _build(den_lib, den_cls, den_cfg, where, den_name)
    den_count = _count_denoiser(den, den_cls, den_cfg, lat_h, lat_w, text_dims, configs, where)
    vae_count = _count_vae(vae, latent_ch, lat_h, lat_w)
    return PipelineCount(
        width=width,
        height=height,
        denoiser=den_count,
        text=tuple(text_counts),
        vae_decode=vae_count,
        denoiser_kind=den_cls,
    )


def pipeline_size(configs: dict[str, Any], width: int, height: int) -> tuple[int, int]:
    """The size the pipeline really computes at: PixArt pipelines snap the request to an aspect-ratio bin of
    their native resolution (``use_resolution_binning``, on by default) and resize the image afterwards."""
    cls = str(configs.get("model_index", {}).get("_class_name", ""))
    den = configs.get("transformer")
    if not cls.startswith("PixArt") or den is None:
        return width, height
    sample = int(den[2].get("sample_size") or 128)
    try:
        from diffusers.pipelines.pixart_alpha import pipeline_pixart_alpha as pa
        from diffusers.pipelines.pixart_alpha import pipeline_pixart_sigma as ps

        bins = {
            128: pa.ASPECT_RATIO_1024_BIN,
            64: pa.ASPECT_RATIO_512_BIN,
            32: pa.ASPECT_RATIO_256_BIN,
            256: ps.ASPECT_RATIO_2048_BIN,
        }.get(sample)
    except (ImportError, AttributeError):  # pragma: no cover - other diffusers layouts
        bins = None
    if not bins:
        return binned_size(sample * 8, width, height)
    ratio = height / width
    key = min(bins, key=lambda r: abs(float(r) - ratio))
    h, w = bins[key]
    return int(w), int(h)


def binned_size(base: int, width: int, height: int) -> tuple[int, int]:
    """``width``×``height`` scaled to the area base² at the same aspect ratio, in multiples of 32."""
    ratio = height / width
    w = max(32, round(base / ratio**0.5 / 32) * 32)
    h = max(32, round(base * ratio**0.5 / 32) * 32)
    return w, h


def _build(lib: str, cls_name: str, cfg: dict[str, Any], where: str, component: str) -> Any:
    import importlib

    import torch

    try:
        module = importlib.import_module(lib)
        cls = getattr(module, cls_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{where}/{component}: class {lib}.{cls_name} is not available ({exc})") from exc
    try:
        with torch.device("meta"):
            if lib == "transformers":
                config = cls.config_class.from_dict(dict(cfg))
                model = cls(config)
            else:
                model = cls.from_config(dict(cfg))
    except Exception as exc:
        raise ConfigError(
            f"{where}/{component}/config.json: cannot build {cls_name} from it ({exc})"
        ) from exc
    return model.eval()


def _params(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _count_text(model: Any, tokens: int) -> ComponentCount:
    import torch

    ids = torch.zeros(1, tokens, dtype=torch.long, device="meta")
    return count_forward(lambda: model(input_ids=ids), _params(model))


def _count_vae(vae: Any, latent_ch: int, h: int, w: int) -> ComponentCount:
    import torch

    z = torch.empty(1, latent_ch, h, w, device="meta")
    decoder_params = _params(vae)
    return count_forward(lambda: vae.decode(z), decoder_params)


def _count_denoiser(
    den: Any,
    cls: str,
    cfg: dict[str, Any],
    h: int,
    w: int,
    texts: list[tuple[Any, int]],
    configs: dict[str, Any],
    where: str,
) -> ComponentCount:
    import torch

    meta: dict[str, Any] = {"device": "meta"}
    t = torch.zeros(1, **meta)
    tokens = texts[0][1] if texts else 77
    params = _params(den)
    if cls == "UNet2DConditionModel":
        x = torch.empty(1, int(cfg.get("in_channels", 4)), h, w, **meta)
        ctx = torch.empty(1, tokens, int(cfg.get("cross_attention_dim") or 768), **meta)
        kwargs: dict[str, Any] = {}
        if cfg.get("addition_embed_type") == "text_time":
            tdim = int(cfg.get("addition_time_embed_dim") or 256)
            pooled = int(cfg.get("projection_class_embeddings_input_dim") or 2816) - 6 * tdim
            kwargs["added_cond_kwargs"] = {
                "text_embeds": torch.empty(1, pooled, **meta),
                "time_ids": torch.empty(1, 6, **meta),
            }
        return count_forward(lambda: den(x, t, encoder_hidden_states=ctx, **kwargs), params)
    if cls in ("PixArtTransformer2DModel", "Transformer2DModel"):
        x = torch.empty(1, int(cfg.get("in_channels", 4)), h, w, **meta)
        ctx = torch.empty(
            1, tokens, int(cfg.get("caption_channels") or cfg.get("cross_attention_dim") or 4096), **meta
        )
        added: dict[str, Any]
        if cfg.get("use_additional_conditions", cfg.get("sample_size") == 128):
            added = {"resolution": torch.empty(1, 2, **meta), "aspect_ratio": torch.empty(1, 1, **meta)}
        else:
            added = {"resolution": None, "aspect_ratio": None}
        return count_forward(
            lambda: den(x, encoder_hidden_states=ctx, timestep=t, added_cond_kwargs=added), params
        )
    if cls == "SD3Transformer2DModel":
        x = torch.empty(1, int(cfg.get("in_channels", 16)), h, w, **meta)
        seq = sum(n for _m, n in texts[:1]) + (texts[2][1] if len(texts) > 2 else 0)
        ctx = torch.empty(1, seq or 333, int(cfg.get("joint_attention_dim") or 4096), **meta)
        pooled_t = torch.empty(1, int(cfg.get("pooled_projection_dim") or 2048), **meta)
        return count_forward(
            lambda: den(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled_t, timestep=t),
            params,
        )
    raise ConfigError(
        f"{where}: denoiser class {cls} is not supported for FLOP counting; give cost_tflops/cost_seconds"
    )


# --------------------------------------------------------------------------------------- built-in families


def _clip(hidden: int, layers: int, heads: int, inter: int, act: str, proj: int) -> dict[str, Any]:
    return {
        "vocab_size": 49408,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "max_position_embeddings": 77,
        "hidden_act": act,
        "projection_dim": proj,
    }


_CLIP_L = _clip(768, 12, 12, 3072, "quick_gelu", 768)  # openai/clip-vit-large-patch14 text tower
_CLIP_H = _clip(1024, 23, 16, 4096, "gelu", 512)  # OpenCLIP ViT-H/14 text tower, penultimate layer (SD 2.x)
_CLIP_G = _clip(1280, 32, 20, 5120, "gelu", 1280)  # OpenCLIP ViT-bigG/14 text tower (SDXL, SD3)
_T5_XXL = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 32,
    "is_encoder_decoder": False,
}


def _vae_cfg(latent: int = 4, sd3: bool = False) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": latent,
        "layers_per_block": 2,
        "block_out_channels": [128, 256, 512, 512],
        "norm_num_groups": 32,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    }
    if sd3:
        cfg.update(use_quant_conv=False, use_post_quant_conv=False)
    return cfg


def _sd_unet(cross: int, heads: Any, linear: bool) -> dict[str, Any]:
    return {
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "cross_attention_dim": cross,
        "attention_head_dim": heads,
        "use_linear_projection": linear,
    }


_SDXL_UNET = {
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": [320, 640, 1280],
    "layers_per_block": 2,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "transformer_layers_per_block": [1, 2, 10],
    "attention_head_dim": [5, 10, 20],
    "cross_attention_dim": 2048,
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
_PIXART = {
    "num_attention_heads": 16,
    "attention_head_dim": 72,
    "in_channels": 4,
    "out_channels": 8,
    "num_layers": 28,
    "patch_size": 2,
    "sample_size": 128,
    "cross_attention_dim": 1152,
    "caption_channels": 4096,
    "norm_type": "ada_norm_single",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "num_embeds_ada_norm": 1000,
    "use_additional_conditions": True,
}
_SD3 = {
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 24,
    "attention_head_dim": 64,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1536,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 192,
}


def _clip_parts(*towers: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, (cls, cfg) in enumerate(towers):
        sfx = "" if i == 0 else f"_{i + 1}"
        out[f"text_encoder{sfx}"] = ("transformers", cls, cfg)
        out[f"tokenizer{sfx}"] = ("transformers", "CLIPTokenizer", {"model_max_length": 77})
    return out


#: Key numbers of the real configs of each family's reference checkpoint (written from the published
#: ``config.json`` files of runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1,
#: stabilityai/stable-diffusion-xl-base-1.0, stabilityai/sdxl-turbo, PixArt-alpha/PixArt-XL-2-1024-MS and
#: stabilityai/stable-diffusion-3-medium-diffusers), with the family's native size.
def family_configs() -> dict[str, tuple[dict[str, Any], int, int]]:
    unet = "UNet2DConditionModel"
    sd1 = {
        "unet": ("diffusers", unet, _sd_unet(768, 8, False)),
        "vae": ("diffusers", "AutoencoderKL", _vae_cfg()),
        **_clip_parts(("CLIPTextModel", _CLIP_L)),
    }
    sd2 = {
        "unet": ("diffusers", unet, _sd_unet(1024, [5, 10, 20, 20], True)),
        "vae": ("diffusers", "AutoencoderKL", _vae_cfg()),
        **_clip_parts(("CLIPTextModel", _CLIP_H)),
    }
    sdxl = {
        "unet": ("diffusers", unet, _SDXL_UNET),
        "vae": ("diffusers", "AutoencoderKL", _vae_cfg()),
        **_clip_parts(("CLIPTextModel", _CLIP_L), ("CLIPTextModelWithProjection", _CLIP_G)),
    }
    pixart = {
        "transformer": ("diffusers", "PixArtTransformer2DModel", _PIXART),
        "vae": ("diffusers", "AutoencoderKL", _vae_cfg()),
        "text_encoder": ("transformers", "T5EncoderModel", _T5_XXL),
        "tokenizer": ("transformers", "T5Tokenizer", {"model_max_length": 120}),
    }
    sd3 = {
        "transformer": ("diffusers", "SD3Transformer2DModel", _SD3),
        "vae": ("diffusers", "AutoencoderKL", _vae_cfg(16, sd3=True)),
        **_clip_parts(
            ("CLIPTextModelWithProjection", {**_CLIP_L, "projection_dim": 768}),
            ("CLIPTextModelWithProjection", _CLIP_G),
        ),
        "text_encoder_3": ("transformers", "T5EncoderModel", _T5_XXL),
        "tokenizer_3": ("transformers", "T5TokenizerFast", {"model_max_length": 256}),
    }
    return {
        "sd1": (sd1, 512, 512),
        "sd2": (sd2, 768, 768),
        "sdxl": (sdxl, 1024, 1024),
        "sdxl-turbo": (sdxl, 512, 512),
        "pixart": (pixart, 1024, 1024),
        "sd3": (sd3, 1024, 1024),
    }


#: Counted numbers per family at its reference size (regenerate: ``python -m catimg.flops --family-table``).
FAMILY_TABLE: dict[str, PipelineCount] = {  # noqa: E501
    "sd1": PipelineCount.from_dict(
        {
            "width": 512,
            "height": 512,
            "denoiser": {
                "tflops": 0.80327344128,
                "attention_tflops": 0.12605227008,
                "ops": 1647,
                "params": 859520964,
                "activation_bytes": 136321280,
            },
            "text": [
                {
                    "tflops": 0.01329850368,
                    "attention_tflops": 0.000218566656,
                    "ops": 516,
                    "params": 123060480,
                    "activation_bytes": 3784704,
                }
            ],
            "vae_decode": {
                "tflops": 2.514518933504,
                "attention_tflops": 0.034359738368,
                "ops": 166,
                "params": 83653863,
                "activation_bytes": 805371904,
            },
            "denoiser_kind": "UNet2DConditionModel",
        }
    ),
    "sd2": PipelineCount.from_dict(
        {
            "width": 768,
            "height": 768,
            "denoiser": {
                "tflops": 2.14910574592,
                "attention_tflops": 0.62813380608,
                "ops": 1759,
                "params": 865910724,
                "activation_bytes": 306714880,
            },
            "text": [
                {
                    "tflops": 0.045127233536,
                    "attention_tflops": 0.000558559232,
                    "ops": 932,
                    "params": 340387840,
                    "activation_bytes": 3784704,
                }
            ],
            "vae_decode": {
                "tflops": 5.754304364544,
                "attention_tflops": 0.173946175488,
                "ops": 166,
                "params": 83653863,
                "activation_bytes": 1812086784,
            },
            "denoiser_kind": "UNet2DConditionModel",
        }
    ),
    "sdxl": PipelineCount.from_dict(
        {
            "width": 1024,
            "height": 1024,
            "denoiser": {
                "tflops": 6.76123639808,
                "attention_tflops": 0.7839154176,
                "ops": 5457,
                "params": 2567463684,
                "activation_bytes": 330312960,
            },
            "text": [
                {
                    "tflops": 0.01329850368,
                    "attention_tflops": 0.000218566656,
                    "ops": 516,
                    "params": 123060480,
                    "activation_bytes": 3784704,
                },
                {
                    "tflops": 0.09786310656,
                    "attention_tflops": 0.00097140736,
                    "ops": 1294,
                    "params": 694659840,
                    "activation_bytes": 4730880,
                },
            ],
            "vae_decode": {
                "tflops": 10.470392594432,
                "attention_tflops": 0.549755813888,
                "ops": 166,
                "params": 83653863,
                "activation_bytes": 3221487616,
            },
            "denoiser_kind": "UNet2DConditionModel",
        }
    ),
    "sdxl-turbo": PipelineCount.from_dict(
        {
            "width": 512,
            "height": 512,
            "denoiser": {
                "tflops": 1.58877876224,
                "attention_tflops": 0.05505024,
                "ops": 5457,
                "params": 2567463684,
                "activation_bytes": 82586880,
            },
            "text": [
                {
                    "tflops": 0.01329850368,
                    "attention_tflops": 0.000218566656,
                    "ops": 516,
                    "params": 123060480,
                    "activation_bytes": 3784704,
                },
                {
                    "tflops": 0.09786310656,
                    "attention_tflops": 0.00097140736,
                    "ops": 1294,
                    "params": 694659840,
                    "activation_bytes": 4730880,
                },
            ],
            "vae_decode": {
                "tflops": 2.514518933504,
                "attention_tflops": 0.034359738368,
                "ops": 166,
                "params": 83653863,
                "activation_bytes": 805371904,
            },
            "denoiser_kind": "UNet2DConditionModel",
        }
    ),
    "pixart": PipelineCount.from_dict(
        {
            "width": 1024,
            "height": 1024,
            "denoiser": {
                "tflops": 6.509523566592,
                "attention_tflops": 2.228081393664,
                "ops": 2337,
                "params": 611349152,
                "activation_bytes": 227105280,
            },
            "text": [
                {
                    "tflops": 1.11698509824,
                    "attention_tflops": 0.0056623104,
                    "ops": 1545,
                    "params": 4762310656,
                    "activation_bytes": 31211520,
                }
            ],
            "vae_decode": {
                "tflops": 10.470392594432,
                "attention_tflops": 0.549755813888,
                "ops": 166,
                "params": 83653863,
                "activation_bytes": 3221487616,
            },
            "denoiser_kind": "PixArtTransformer2DModel",
        }
    ),
    "sd3": PipelineCount.from_dict(
        {
            "width": 1024,
            "height": 1024,
            "denoiser": {
                "tflops": 8.904337539072,
                "attention_tflops": 2.892502941696,
                "ops": 2792,
                "params": 2028328000,
                "activation_bytes": 333336576,
            },
            "text": [
                {
                    "tflops": 0.013299683328,
                    "attention_tflops": 0.000218566656,
                    "ops": 518,
                    "params": 123650304,
                    "activation_bytes": 3784704,
                },
                {
                    "tflops": 0.09786310656,
                    "attention_tflops": 0.00097140736,
                    "ops": 1294,
                    "params": 694659840,
                    "activation_bytes": 4730880,
                },
                {
                    "tflops": 2.396591751168,
                    "attention_tflops": 0.025769803776,
                    "ops": 1545,
                    "params": 4762310656,
                    "activation_bytes": 75497472,
                },
            ],
            "vae_decode": {
                "tflops": 10.472204009472,
                "attention_tflops": 0.549755813888,
                "ops": 165,
                "params": 83819683,
                "activation_bytes": 3221225472,
            },
            "denoiser_kind": "SD3Transformer2DModel",
        }
    ),
}


def _main(argv: list[str]) -> int:  # pragma: no cover - developer tool
    if argv[:1] == ["--family-table"]:
        for fam, (configs, w, h) in family_configs().items():
            c = count_from_configs(configs, w, h, where=fam)
            print(f"    {fam!r}: PipelineCount.from_dict({json.dumps(c.to_dict())}),")
        return 0
    print("usage: python -m catimg.flops --family-table", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
