"""Real, tiny diffusers pipelines for tests (random weights from small configs).

``build_tiny_sd(path)`` and ``build_tiny_sdxl(path)`` write a complete diffusers pipeline folder with
``save_pretrained``; ``build_tiny_pixart(path)`` does the same for a transformer-based (PixArt-α) pipeline.
``install_fake_hub(cache_root, repo_id, folder)`` lays such a folder out as a Hugging Face cache entry
(``models--org--name/snapshots/<40 hex>/`` + ``refs/main``) so that product code loads the Hub id offline with
``HF_HUB_CACHE=cache_root``. ``generator(name, source)`` and ``run_options(out)`` are the one factory each for
catalog entries and run options over these pipelines; ``write_measurements`` writes a synthetic long-format
CSV.

Everything is 32-64 px with a handful of channels: a pipeline builds in well under a second and makes an image
in a few tens of milliseconds per step on a CPU.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from catimg.config import Generator
    from catimg.generation.generate import RunOptions

TINY_SIZE = 64  # pixels; the VAE below downsamples by 2, so latents are 32x32


def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2/CLIP reversible byte -> printable unicode table (written out here, not imported)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def tiny_tokenizer(max_length: int = 77) -> Any:
    """A byte-level CLIP tokenizer built from Python objects: 256 byte tokens, 256 word-end tokens, 2
    specials."""
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)
    return tok


def _seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _text_encoder(seed: int, hidden: int = 32, projection: bool = False, projection_dim: int = 32) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    _seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=514,
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=projection_dim,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_act="gelu",
    )
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)
    return model.eval()


def _vae(seed: int) -> Any:
    from diffusers import AutoencoderKL

    _seed(seed)
    return AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_SIZE,
    ).eval()


def build_tiny_sd(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny StableDiffusionPipeline (SD 1.x layout) to ``path`` and return it."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    path = Path(path)
    _seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=TINY_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
        attention_head_dim=4,
    ).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=_vae(seed + 1),
        text_encoder=_text_encoder(seed + 2),
        tokenizer=tiny_tokenizer(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_sdxl(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny StableDiffusionXLPipeline (two text encoders, the second with projection) to ``path``."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    path = Path(path)
    _seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=TINY_SIZE // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled text
        cross_attention_dim=64,  # 32 + 32 from the two text encoders
        norm_num_groups=8,
    ).eval()
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=_vae(seed + 1),
        text_encoder=_text_encoder(seed + 2),
        text_encoder_2=_text_encoder(seed + 3, projection=True),
        tokenizer=tiny_tokenizer(),
        tokenizer_2=tiny_tokenizer(),
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def build_tiny_pixart(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny PixArtAlphaPipeline (DiT transformer + T5 encoder) to ``path``."""
    from diffusers import DDIMScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    path = Path(path)
    _seed(seed)
    transformer = PixArtTransformer2DModel(
        sample_size=TINY_SIZE // 2,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_channels=32,
        in_channels=4,
        cross_attention_dim=16,
        out_channels=8,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    ).eval()
    _seed(seed + 2)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=600,
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()
    tokenizer = _tiny_t5_tokenizer(T5TokenizerFast)
    pipe = PixArtAlphaPipeline(
        transformer=transformer,
        vae=_vae(seed + 1),
        text_encoder=t5,
        tokenizer=tokenizer,
        scheduler=DDIMScheduler(),
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def _tiny_t5_tokenizer(cls: Any) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    for c in "abcdefghijklmnopqrstuvwxyz0123456789 ,.":
        pieces.append((c, -1.0))
    tk = Tokenizer(models.Unigram(pieces, unk_id=2))
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    return cls(
        tokenizer_object=tk,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=32,
        extra_ids=0,
    )


def install_fake_hub(cache_root: str | Path, repo_id: str, folder: str | Path) -> Path:
    """Lay ``folder`` out as the Hub cache entry of ``repo_id`` under ``cache_root``; return the snapshot
    path.

    The layout mirrors huggingface_hub's: ``models--org--name/snapshots/<commit>/`` holding the files and
    ``models--org--name/refs/main`` holding the commit hash. Files are copied (not linked) so tests may delete
    the source folder.
    """
    cache_root = Path(cache_root)
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo_dir = cache_root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(folder, snapshot)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    (repo_dir / "blobs").mkdir(exist_ok=True)
    os.utime(snapshot)
    return snapshot


WORDS = ["cat", "dog", "house", "tree", "car", "park", "crowd", "wall", "sky", "sea", "city", "forest"]
HARD_WORDS = ("crowd", "city")


def write_sd_turbo_catalog(root: Path, sd_dir: Path, sdxl_dir: Path) -> tuple[Path, Path]:
    """(fake Hub cache, models.toml) of root: ``sd`` at 2 and 4 steps from the tiny SD folder and ``turbo``, a
    Hub id whose cache entry is the tiny SDXL folder; 64 px."""
    hub = root / "hub"
    install_fake_hub(hub, "stabilityai/sdxl-turbo", sdxl_dir)
    models = root / "models.toml"
    models.write_text(
        f'[generators.sd]\nsource = "{sd_dir}"\nsteps = [2, 4]\nguidance = 2.0\n'
        "width = 64\nheight = 64\n"
        '[generators.turbo]\nsource = "stabilityai/sdxl-turbo"\nsteps = 2\nguidance = 0.0\n'
        "width = 64\nheight = 64\n"
    )
    return hub, models


def write_measurements(
    path: str | Path,
    scores: dict[str, tuple[float, float, float]],
    n: int = 40,
    hard_words: tuple[str, ...] = HARD_WORDS,
) -> Path:
    """A synthetic long-format CSV (prompt,generator,score,seconds) for routers over tiny generators.

    ``scores`` maps a generator name to (score on easy prompts, score on hard prompts, seconds); a prompt is
    hard when it mentions one of ``hard_words``, so a trained router has something real to learn.
    """
    import csv

    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "generator", "score", "seconds"])
        for i in range(n):
            p = f"a {WORDS[i % 12]} and a {WORDS[(i * 5) % 12]} number {i}"
            hard = any(x in p for x in hard_words)
            w.writerows([[p, g, h if hard else e, s] for g, (e, h, s) in scores.items()])
    return path


def generator(
    name: str,
    source: str | Path | None = None,
    steps: int = 2,
    model: str | None = None,
    *,
    family: str = "sd1",
    guidance: float = 2.0,
    **kw: Any,
) -> Generator:
    """A 64-px catalog entry for the tiny pipelines. ``model`` defaults to the part of ``name`` before "@"
    (step variants share weights), ``source`` to ``/models/<model>``; other Generator fields go through
    ``kw``."""
    from catimg.config import Generator

    model = model or name.split("@")[0]
    return Generator(
        name=name,
        model=model,
        source=str(source if source is not None else f"/models/{model}"),
        family=family,
        steps=steps,
        guidance=guidance,
        width=TINY_SIZE,
        height=TINY_SIZE,
        **kw,
    )


def run_options(out: str | Path, **kw: Any) -> RunOptions:
    """Run options for a CPU run into ``out`` (budget "low", router version "test"); ``kw`` overrides any
    field."""
    from catimg.device import cpu_device
    from catimg.generation.generate import RunOptions

    fields: dict[str, Any] = {"device": cpu_device(), "budget": "low", "router_version": "test", **kw}
    return RunOptions(out_dir=Path(out), **fields)
