"""Prompts: reading prompt files, validating single prompts, and the built-in reference prompt sets.

A prompt file is UTF-8 text with one prompt a line; blank lines and lines starting with ``#`` are skipped.
Reference sets ship as package data under ``catimg/data/prompts/<name>.txt`` (see ``ATTRIBUTION.md``).

A prompt longer than the generator's text encoder takes (77 CLIP tokens) is cut by the pipeline:
:func:`fit_prompts` finds where (with the generator's own tokenizer when its weights are on disk, else a
documented approximation), so that the CLI can say so once per run and the router can embed the prompt as the
generator sees it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from catimg.errors import InputError, did_you_mean
from catimg.textfiles import read_user_text

PROMPT_SETS_DIR = Path(__file__).parent / "data" / "prompts"


def validate_prompt(text: str) -> str:
    """Return the prompt stripped of surrounding whitespace; an empty prompt is an :class:`InputError`."""
    if not isinstance(text, str) or not text.strip():
        raise InputError('empty prompt: give some text to draw, e.g. catimg gen "a lighthouse at dusk"')
    return text.strip()


def parse_prompt_lines(text: str) -> list[str]:
    """Prompts from text: one a line, blank lines and ``#`` comment lines skipped, whitespace stripped."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        out.append(s)
    return out


def read_prompt_file(path: str | Path) -> list[str]:
    """Read a prompt file (UTF-8, one prompt a line; blank and ``#`` lines skipped).

    Raises :class:`InputError` with one line for a missing file, a folder, unreadable or non-UTF-8 bytes
    (with the byte offset) and a file with no prompts.
    """
    p = Path(path).expanduser()
    text = read_user_text(p, "prompt file", InputError, hint="check the path or pass prompts as arguments")
    prompts = parse_prompt_lines(text)
    if not prompts:
        raise InputError(
            f"{p}: no prompts in the file (blank lines and lines starting with # are skipped); add one "
            "prompt a line"
        )
    return prompts


def list_reference_sets() -> list[str]:
    """Names of the built-in reference prompt sets, sorted."""
    if not PROMPT_SETS_DIR.is_dir():
        return []
    return sorted(p.stem for p in PROMPT_SETS_DIR.glob("*.txt"))


def reference_set_path(name: str) -> Path:
    names = list_reference_sets()
    if name not in names:
        raise InputError(
            f'unknown prompt set "{name}"{did_you_mean(name, names)}; built-in '
            f"sets: {', '.join(names) or 'none'}"
        )
    return PROMPT_SETS_DIR / f"{name}.txt"


def reference_set(name: str) -> list[str]:
    """The prompts of a built-in reference set, in file order."""
    return parse_prompt_lines(reference_set_path(name).read_text(encoding="utf-8"))


# --- prompts longer than the generator's text encoder takes -------------------------------------------------

#: Tokens (special tokens included) that the text encoder of a family reads; the pipeline drops the rest. CLIP
#: (SD 1.x/2.x, SDXL): 77; PixArt-α's T5: 120 (diffusers' max_sequence_length); DeepFloyd IF's T5: 77. SD3 and
#: Flux also read a long T5 prompt next to CLIP, so nothing is lost there as a whole: no limit.
FAMILY_TOKEN_LIMITS: dict[str, int] = {
    "sd1": 77,
    "sd2": 77,
    "sdxl": 77,
    "sdxl-turbo": 77,
    "pixart": 120,
    "if": 77,
}
#: texts -> per text (end offset of each text token, tokens with the specials)
Counter = Callable[[list[str]], list[tuple[list[int], int]]]
_APPROX = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_", re.IGNORECASE)


@dataclass(frozen=True)
class Cut:
    """One prompt longer than the text encoder takes: what the generator sees of it."""

    index: int  # 0-based prompt index
    tokens: int  # tokens of the whole prompt (specials included)
    kept: str  # the prompt as the generator sees it
    words: int  # words of the whole prompt
    words_kept: int  # whole words the generator sees
    first_dropped: str  # the first word it does not see whole


@dataclass(frozen=True)
class Fit:
    """Prompts fitted to the text encoder of the generators that may make them (see :func:`fit_prompts`)."""

    texts: list[str]  # every prompt as the generator sees it: what the router embeds
    cuts: tuple[Cut, ...]
    limit: int | None  # tokens the encoder takes; None: no limit that matters
    generators: tuple[str, ...]  # the generators with that limit
    counted_by: str  # "the tokenizer of NAME" or the approximation used

    def note(self, shown: int = 3) -> str | None:
        """One line for the run (None when no prompt is cut)."""
        if not self.cuts:
            return None
        where = "; ".join(
            f"prompt {c.index + 1} after word {c.words_kept} of {c.words} (from "
            f'"{_short(c.first_dropped)}" on)'
            for c in self.cuts[:shown]
        )
        more = f"; and {len(self.cuts) - shown} more" if len(self.cuts) > shown else ""
        return (
            f"{len(self.cuts)} of {len(self.texts)} prompt(s) are longer than the {self.limit} tokens "
            f"the text encoder of {', '.join(self.generators)} takes ({self.counted_by}), so the "
            f"generator does not see their end: {where}{more}. The router sees the prompts as cut, too"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "generators": list(self.generators),
            "counted_by": self.counted_by,
            "cut": [asdict(c) for c in self.cuts],
        }


def fit_prompts(prompts: list[str], gens: Sequence[Any]) -> Fit:
    """Cut each prompt where the text encoder of ``gens`` (the generators that may make it) stops reading.

    The limit is the smallest of the generators' (:func:`token_limit`). Tokens are counted with
    the tokenizer in the weights of the first such generator that is on disk (``tokenizer/tokenizer.json``
    through the ``tokenizers`` library; a slow-format tokenizer, vocab.json + merges.txt, is converted once by
    transformers and cached in catimg's cache dir). Without local weights the
    count is an approximation: CLIP's pre-tokenisation (a word, a digit or a run of punctuation is one token,
    plus the two special tokens), which undercounts rare and long words (BPE splits them), so a cut may fall a
    few words late. A prompt whose non-space UTF-8 bytes plus 2 fit the limit is never cut (each token covers
    a byte or more), so short prompts need no tokenizer at all.
    """
    limited = [(n, g) for g in gens if (n := token_limit(g)) is not None]
    if not limited:
        return Fit(list(prompts), (), None, (), "no generator with a short text encoder")
    limit = min(n for n, _ in limited)
    names = tuple(g.name for n, g in limited if n == limit)
    maybe = [i for i, p in enumerate(prompts) if len("".join(p.split()).encode("utf-8")) + 2 > limit]
    if not maybe:
        return Fit(list(prompts), (), limit, names, "not counted: every prompt is short enough")
    count, counted_by = _counter([g for n, g in limited if n == limit])
    texts, cuts = list(prompts), []
    for i, (ends, total) in zip(maybe, count([prompts[i] for i in maybe]), strict=True):
        if total <= limit:
            continue
        end = ends[limit - 2 - 1] if limit - 2 >= 1 else 0  # the specials (start, end) take two of the tokens
        kept = prompts[i][:end].rstrip()
        words, kept_words = prompts[i].split(), kept.split()
        whole = (
            len(kept_words) if end >= len(prompts[i]) or prompts[i][end].isspace() else len(kept_words) - 1
        )
        texts[i] = kept
        cuts.append(Cut(i, total, kept, len(words), max(whole, 0), words[max(whole, 0)] if words else ""))
    return Fit(texts, tuple(cuts), limit, names, counted_by)


def fit_for_run(prompts: list[str], catalog: Any, forced: str | None = None) -> Fit:
    """:func:`fit_prompts` for a run: the forced generator, else every enabled generator of ``catalog``."""
    gens = [catalog.get(forced)] if forced else list(catalog.enabled)
    return fit_prompts(prompts, gens)


def token_limit(gen: Any) -> int | None:
    """Tokens ``gen``'s text encoder reads: by family (:data:`FAMILY_TOKEN_LIMITS`); for a family catimg does
    not know, the ``model_max_length`` of the tokenizer in its local weights, unless the pipeline also has a
    second, T5 tokenizer (SD3, Flux: a long prompt still reaches the model); None when unknown."""
    if gen.family in FAMILY_TOKEN_LIMITS:
        return FAMILY_TOKEN_LIMITS[gen.family]
    if gen.family in ("sd3", "flux"):
        return None
    import json

    folder = _tokenizer_folder(gen)
    if folder is None:
        return None
    try:
        index = json.loads((folder.parent / "model_index.json").read_text(encoding="utf-8"))
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    others = [
        v for k, v in index.items() if k.startswith("tokenizer_") and isinstance(v, list) and len(v) == 2
    ]
    if any("T5" in str(v[1]) for v in others):
        return None
    n = config.get("model_max_length")
    return int(n) if isinstance(n, int) and 1 < n <= 4096 else None


def _counter(gens: Sequence[Any]) -> tuple[Counter, str]:
    """(a :data:`Counter`, how it counts) for the first local tokenizer, else the approximation."""
    for g in gens:
        folder = _tokenizer_folder(g)
        if folder is None:
            continue
        try:
            return _load_counter(folder), f"counted with the tokenizer of {g.name}"
        except Exception:  # an unreadable tokenizer: the next one, else the approximation
            continue
    return (
        _approx_count,
        "counted approximately: one token per word, digit or punctuation run; weights not on disk",
    )


def _tokenizer_folder(gen: Any) -> Path | None:
    try:
        from catimg.pipelines import weights_location

        loc = weights_location(gen)
    except Exception:
        return None
    folder = loc / "tokenizer" if loc is not None else None
    return folder if folder is not None and folder.is_dir() else None


def _load_counter(folder: Path) -> Counter:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(_tokenizer_json(folder)))

    def count(texts: list[str]) -> list[tuple[list[int], int]]:
        return [
            (
                [e for (_, e), sp in zip(enc.offsets, enc.special_tokens_mask, strict=True) if not sp],
                len(enc.ids),
            )
            for enc in tok.encode_batch(texts)
        ]

    return count


def _tokenizer_json(folder: Path) -> Path:
    """``folder/tokenizer.json``; for a tokenizer saved in the slow format (vocab.json + merges.txt, as the SD
    repos on the Hub ship it) the fast tokenizer transformers converts it to, converted once and kept in
    catimg's cache dir (keyed by the folder and its files' sizes and times), so later runs need no
    transformers import."""
    own = folder / "tokenizer.json"
    if own.is_file():
        return own
    import hashlib

    from catimg.paths import cache_dir

    stamp = [str(folder.resolve())] + [
        f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in sorted(folder.iterdir()) if f.is_file()
    ]
    cached = (
        cache_dir() / "tokenizers" / (hashlib.sha256("|".join(stamp).encode()).hexdigest()[:24] + ".json")
    )
    if not cached.is_file():
        from transformers import AutoTokenizer

        backend = AutoTokenizer.from_pretrained(str(folder)).backend_tokenizer
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + ".tmp")
        backend.save(str(tmp))
        tmp.replace(cached)
    return cached


def _short(word: str, n: int = 24) -> str:
    return word if len(word) <= n else word[: n - 1] + "…"


def _approx_count(texts: list[str]) -> list[tuple[list[int], int]]:
    out = []
    for text in texts:
        ends = [m.end() for m in _APPROX.finditer(text)]
        out.append((ends, len(ends) + 2))
    return out


# --- building the reference sets (run once by maintainers; the result ships as package data) ---------------

GENEVAL_TAGS = ("counting", "colors", "position")


def build_parti_geneval(data_dir: str | Path, n_parti: int, n_geneval: int, seed: int = 0) -> list[str]:
    """A stratified sample of PartiPrompts (by Category) plus GenEval counting/colour/position prompts.

    Parti's share is split over its 12 categories in proportion to their size (largest remainders, at least
    one each); GenEval's share evenly over :data:`GENEVAL_TAGS`. The result is shuffled with ``seed`` so that
    the first N prompts (``calibrate --limit N``) are themselves a mixed sample. Deterministic.
    """
    import csv
    import json
    import random

    data = Path(data_dir)
    rng = random.Random(seed)
    with open(data / "partiprompts" / "PartiPrompts.tsv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    by_cat: dict[str, list[str]] = {}
    for r in rows:
        p = " ".join(r["Prompt"].split())
        if p:
            by_cat.setdefault(r["Category"], []).append(p)
    total = sum(len(v) for v in by_cat.values())
    cats = sorted(by_cat)
    quota = {c: max(1, int(n_parti * len(by_cat[c]) / total)) for c in cats}
    rema = sorted(cats, key=lambda c: -((n_parti * len(by_cat[c]) / total) % 1))
    i = 0
    while sum(quota.values()) < n_parti:
        quota[rema[i % len(rema)]] += 1
        i += 1
    while sum(quota.values()) > n_parti:
        big = max(cats, key=lambda c: quota[c])
        quota[big] -= 1
    chosen: list[str] = []
    seen: set[str] = set()
    for c in cats:
        pool = sorted(set(by_cat[c]))
        rng.shuffle(pool)
        take = [p for p in pool if p not in seen][: quota[c]]
        seen.update(take)
        chosen.extend(take)
    gen_rows = [
        json.loads(line)
        for line in (data / "geneval" / "evaluation_metadata.jsonl").read_text("utf-8").splitlines()
        if line.strip()
    ]
    per_tag = [
        n_geneval // len(GENEVAL_TAGS) + (1 if k < n_geneval % len(GENEVAL_TAGS) else 0)
        for k in range(len(GENEVAL_TAGS))
    ]
    for tag, n in zip(GENEVAL_TAGS, per_tag, strict=True):
        pool = sorted({r["prompt"].strip() for r in gen_rows if r["tag"] == tag} - seen)
        rng.shuffle(pool)
        seen.update(pool[:n])
        chosen.extend(pool[:n])
    rng.shuffle(chosen)
    return chosen


def write_reference_set(name: str, prompts: list[str], header: str) -> Path:
    """Write a reference set file under :data:`PROMPT_SETS_DIR` (maintainers only)."""
    PROMPT_SETS_DIR.mkdir(parents=True, exist_ok=True)
    path = PROMPT_SETS_DIR / f"{name}.txt"
    lines = [f"# {h}" for h in header.splitlines()] + prompts
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
