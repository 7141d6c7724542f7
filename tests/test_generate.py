"""Executing a routed plan with real tiny pipelines: loads, batching, seeds, faults, resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tiny import generator, run_options

from catimg.config import Generator
from catimg.device import cpu_device
from catimg.errors import InputError
from catimg.generation import generate
from catimg.generation.events import Event, ImageDone, ModelLoading, RunEnded, RunStarted, Step
from catimg.generation.execution import Engine
from catimg.generation.generate import ImageRecord, LocalEngine, build_plan, run_plan
from catimg.pipelines import load_pipeline


def _pixels(path: Any) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im, dtype=np.int16)


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


def test_each_model_loads_once_and_images_are_recorded(
    tmp_path: Path, tiny_sd_dir: Path, tiny_sdxl_dir: Path
) -> None:
    g2, g3 = generator("sd@2", tiny_sd_dir, 2, "sd"), generator("sd@3", tiny_sd_dir, 3, "sd")
    xl = generator("xl", tiny_sdxl_dir, family="sdxl")
    routed = [(i, f"a cube number {i}", (g2, xl, g3)[i % 3], 0.4 + i / 100, 0.1, 0.5) for i in range(6)]
    plan = build_plan(routed, seed=10)
    events: list[Event] = []
    res = run_plan(plan, run_options(tmp_path / "out", batch_size=2), events.append)
    assert sorted(res.loads) == ["sd", "xl"]  # loads == distinct models
    assert len(res.made) == 6 and not res.failed
    names = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert "0000-a-cube-number-0-sd@2-10.png" in names and len(names) == 6
    recs = manifest(tmp_path / "out")
    assert len(recs) == 6 and {r["status"] for r in recs} == {"ok"}
    assert {r["generator"] for r in recs} == {"sd@2", "sd@3", "xl"}
    r0 = next(r for r in recs if r["index"] == 0)
    assert r0["seed"] == 10 and r0["steps"] == 2 and r0["dtype"] == "fp32" and r0["budget"] == "low"
    assert any(isinstance(e, Step) for e in events)
    assert [e.model for e in events if isinstance(e, ModelLoading)] == ["sd", "xl"]
    assert sum(isinstance(e, ImageDone) for e in events) == 6
    per = res.per_generator()
    assert per["sd@2"]["images"] == 2 and per["xl"]["mean_predicted_quality"] == pytest.approx(
        (0.41 + 0.44) / 2
    )


def test_same_seed_same_image_and_batching_does_not_matter(tmp_path: Path, tiny_sd_dir: Path) -> None:
    g = generator("sd", tiny_sd_dir)
    routed = [(0, "a red cube", g, None, None, None), (1, "a blue ball", g, None, None, None)]
    a = run_plan(build_plan(routed, seed=3), run_options(tmp_path / "a", batch_size=2))
    b = run_plan(build_plan(routed, seed=3), run_options(tmp_path / "b", batch_size=1))
    c = run_plan(build_plan(routed, seed=4), run_options(tmp_path / "c"))
    px = [[_pixels(r.file) for r in res.records] for res in (a, b, c)]
    assert np.abs(px[0][0] - px[1][0]).max() <= 1  # same prompt/seed/generator/device
    assert np.array_equal(px[0][1], _pixels(a.records[1].file))
    assert np.abs(px[0][0] - px[2][0]).max() > 10  # another seed, another image


def test_seed_and_count_validation(tiny_sd_dir: Path) -> None:
    g = generator("sd", tiny_sd_dir)
    with pytest.raises(InputError, match="--seed -1"):
        build_plan([(0, "p", g, None, None, None)], seed=-1)
    with pytest.raises(InputError, match="--images-per-prompt 0"):
        build_plan([(0, "p", g, None, None, None)], images_per_prompt=0)
    items = build_plan(
        [(0, "p", g, None, None, None), (1, "q", g, None, None, None)], seed=5, images_per_prompt=2
    )
    assert [i.seed for i in items] == [5, 6, 7, 8]


class Flaky:
    """Wraps a real pipeline: raises for prompts containing FAIL, returns black images for BLACK."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "pipe":
            object.__setattr__(self, name, value)
        else:
            setattr(self.pipe, name, value)

    def __call__(self, **kw: Any) -> Any:
        if any("FAIL" in p for p in kw["prompt"]):
            raise RuntimeError("pipeline exploded")
        out = self.pipe(**kw)
        out.images = [
            Image.new("RGB", im.size) if "BLACK" in p else im
            for p, im in zip(kw["prompt"], out.images, strict=True)
        ]
        return out


def flaky_loader(only: str) -> Any:
    def load(g: Generator, *a: Any) -> Any:
        p = load_pipeline(g, *a)
        if g.model == only:
            p.__call__  # noqa: B018
            return Flaky(p)
        return p

    return load


def test_one_failing_prompt_does_not_stop_the_batch(
    tmp_path: Path, tiny_sd_dir: Path, tiny_sd2_dir: Path
) -> None:
    big, small = generator("big", tiny_sd_dir), generator("small", tiny_sd2_dir)
    routed = [
        (0, "fine prompt", big, 0.9, 1.0, 0.1),
        (1, "FAIL here", big, 0.9, 1.0, 0.1),
        (2, "BLACK here", big, 0.9, 1.0, 0.1),
        (3, "also fine", big, 0.9, 1.0, 0.1),
    ]
    plan = build_plan(routed, seed=1, fallbacks={1: (small,)})
    res = run_plan(plan, run_options(tmp_path / "o", batch_size=4, loader=flaky_loader("big")))
    by = {r.item.index: r for r in res.records}
    assert by[0].status == "ok" and by[3].status == "ok"
    assert by[1].status == "fallback" and by[1].generator.name == "small" and by[1].file is not None
    assert by[2].status == "failed" and "black" in (by[2].error or "")
    recs = {r["index"]: r for r in manifest(tmp_path / "o")}
    assert (
        recs[1]["status"] == "fallback"
        and recs[1]["routed_generator"] == "big"
        and "exploded" in recs[1]["note"]
    )
    assert recs[2]["status"] == "failed" and recs[2]["file"] is None


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError: catimg knows an out-of-memory error by its class name."""


class OutOfMemoryOnce(Flaky):
    """Wraps a real pipeline: the first call runs out of memory; each later one notes whether attention and
    VAE slicing are on while it runs."""

    def __init__(self, pipe: Any) -> None:
        super().__init__(pipe)
        object.__setattr__(self, "seen", [])

    def __call__(self, **kw: Any) -> Any:
        if not self.seen:
            self.seen.append(None)
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.seen.append(memory_saving_on(self.pipe))
        return self.pipe(**kw)


def memory_saving_on(pipe: Any) -> tuple[bool, bool]:
    """(attention slicing on, VAE slicing on) for a real diffusers pipeline."""
    sliced = {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"SlicedAttnProcessor"}
    return sliced, bool(pipe.vae.use_slicing)


def test_out_of_memory_is_retried_with_attention_and_vae_slicing(tmp_path: Path, tiny_sd_dir: Path) -> None:
    g = generator("sd", tiny_sd_dir)
    wrapped: list[OutOfMemoryOnce] = []

    def load(gen: Generator, *a: Any) -> Any:
        wrapped.append(OutOfMemoryOnce(load_pipeline(gen, *a)))
        return wrapped[0]

    res = run_plan(
        build_plan([(0, "a red cube", g, None, None, None)], seed=2), run_options(tmp_path / "o", loader=load)
    )
    rec = manifest(tmp_path / "o")[0]
    assert rec["status"] == "retried" and rec["attempts"] == 2 and len(res.made) == 1
    assert "OutOfMemoryError: CUDA out of memory" in rec["note"] and "attention/VAE slicing" in rec["note"]
    assert wrapped[0].seen == [None, (True, True)]  # the retry ran with both kinds of slicing
    assert memory_saving_on(wrapped[0].pipe) == (False, False)  # and both are off again after it


def test_local_engine_hands_each_recorded_image_to_on_image_after_its_event(
    tmp_path: Path, tiny_sd_dir: Path
) -> None:
    g = generator("sd", tiny_sd_dir)
    plan = build_plan([(i, f"prompt {i}", g, None, None, None) for i in range(3)], seed=0)
    seen: list[object] = []
    engine: Engine = LocalEngine()  # the Protocol the CLI calls engines through
    res = engine.run(plan, run_options(tmp_path / "o", batch_size=2), seen.append, seen.append)
    per_image = [x for x in seen if isinstance(x, (ImageDone, ImageRecord))]
    assert len(per_image) == 6 and len(res.records) == 3
    for k, rec in enumerate(res.records):  # event, then the hook, for the same record, in recording order
        done, hooked = per_image[2 * k], per_image[2 * k + 1]
        assert isinstance(done, ImageDone) and done.record is rec and hooked is rec
    assert isinstance(seen[0], RunStarted) and seen[0].images == 3 and isinstance(seen[-1], RunEnded)


def test_interrupt_then_resume(tmp_path: Path, tiny_sd_dir: Path) -> None:
    g = generator("sd", tiny_sd_dir)
    plan = build_plan([(i, f"prompt {i}", g, None, None, None) for i in range(4)], seed=0)
    seen = []

    def stop_after_two(event: Event) -> None:
        if isinstance(event, ImageDone):
            seen.append(1)
            if len(seen) == 2:
                raise KeyboardInterrupt

    res = run_plan(plan, run_options(tmp_path / "o", batch_size=1), stop_after_two)
    assert res.interrupted and len(res.made) == 2
    assert len(manifest(tmp_path / "o")) == 2
    again = run_plan(plan, run_options(tmp_path / "o", batch_size=1, resume=True))
    assert again.skipped == 2 and len(again.made) == 2 and not again.interrupted
    assert sorted(r.item.index for r in again.made) == [2, 3]
    assert len(list((tmp_path / "o").glob("*.png"))) == 4
    # an image deleted from disk is made again
    again.made[0].file.unlink()  # type: ignore[union-attr]
    third = run_plan(plan, run_options(tmp_path / "o", resume=True))
    assert third.skipped == 3 and len(third.made) == 1


def test_pixart_transformer_pipeline(tmp_path: Path, tiny_pixart_dir: Path) -> None:
    g = generator("pixart", tiny_pixart_dir, family="pixart")
    res = run_plan(build_plan([(0, "a small cat", g, None, None, None)], seed=2), run_options(tmp_path / "o"))
    assert len(res.made) == 1
    with Image.open(res.made[0].file) as im:  # type: ignore[arg-type]
        assert im.size == (64, 64)


@pytest.mark.gpu
def test_cuda_run_uses_half_precision(tmp_path: Path, tiny_sd_dir: Path) -> None:
    """On a CUDA device: the dtype by device (bf16/fp16), the device in the record, a real (not NaN-black)
    image."""
    from catimg.device import detect_device

    g = generator("sd", tiny_sd_dir)
    plan = build_plan([(0, "a small cat", g, None, None, None)], seed=2)
    res = run_plan(plan, run_options(tmp_path / "gpu", device=detect_device("cuda")))
    assert len(res.made) == 1 and not res.failed
    rec = manifest(tmp_path / "gpu")[0]
    assert rec["device"].startswith("cuda") and rec["dtype"] in ("fp16", "bf16")
    with Image.open(res.made[0].file) as im:  # type: ignore[arg-type]
        pixels = np.asarray(im.convert("RGB"), dtype=float)
    assert pixels.shape == (64, 64, 3) and pixels.std() > 0


def test_batching_of_a_plan_is_shared_by_both_engines() -> None:
    """Models in order of first use, a model's generators (step variants) one after another, then batches."""
    from catimg.generation.execution import batches, group_plan

    a2, a3, b = generator("a@2", steps=2), generator("a@3", steps=3), generator("b")
    plan = build_plan([(i, f"p{i}", g, None, None, None) for i, g in enumerate([a2, b, a3, a2, b, a3, a2])])
    groups = group_plan(plan, range(len(plan)))
    assert [(g.name, ps) for g, ps in groups] == [("a@2", [0, 3, 6]), ("a@3", [2, 5]), ("b", [1, 4])]
    assert group_plan(plan, [4, 5]) == [(b, [4]), (a3, [5])]  # the positions left (resume, a re-queue)
    assert batches([0, 3, 6], 2) == [[0, 3], [6]]


def test_auto_batch_size() -> None:
    from dataclasses import replace

    cpu = cpu_device()
    gpu = replace(cpu, kind="cuda", total_memory_gb=80.0, free_memory_gb=70.0, torch_device="cuda:0")
    assert generate.auto_batch_size(cpu, None) == 4
    assert generate.auto_batch_size(gpu, None) == 1
    assert generate.auto_batch_size(gpu, 10.0) == 8
    assert generate.auto_batch_size(replace(gpu, free_memory_gb=12.0), 10.0) == 1
