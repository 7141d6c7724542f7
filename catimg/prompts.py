"""Prompts: reading prompt files, validating single prompts, and the built-in reference prompt sets.

A prompt file is UTF-8 text with one prompt a line; blank lines and lines starting with ``#`` are skipped.
Reference sets ship as package data under ``catimg/data/prompts/<name>.txt`` (see ``ATTRIBUTION.md``).
"""

from __future__ import annotations

from pathlib import Path

from catimg.errors import InputError, did_you_mean
from catimg.textfiles import read_user_text

PROMPT_SETS_DIR = Path(__file__).parent / "data" / "prompts"


def validate_prompt(text: str) -> str:
    """Return the prompt stripped of surrounding whitespace; an empty prompt is an :class:`InputError`."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("empty prompt: give some text to draw, e.g. catimg gen \"a lighthouse at dusk\"")
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
            f"{p}: no prompts in the file (blank lines and lines starting with # are skipped); add one prompt a line"
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
            f'unknown prompt set "{name}"{did_you_mean(name, names)}; built-in sets: {", ".join(names) or "none"}'
        )
    return PROMPT_SETS_DIR / f"{name}.txt"


def reference_set(name: str) -> list[str]:
    """The prompts of a built-in reference set, in file order."""
    return parse_prompt_lines(reference_set_path(name).read_text(encoding="utf-8"))


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
    gen_rows = [json.loads(line) for line in (data / "geneval" / "evaluation_metadata.jsonl").read_text("utf-8").splitlines() if line.strip()]
    per_tag = [n_geneval // len(GENEVAL_TAGS) + (1 if k < n_geneval % len(GENEVAL_TAGS) else 0) for k in range(len(GENEVAL_TAGS))]
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
