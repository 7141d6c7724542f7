"""Wall-clock of the commands people wait on: `catimg --help`, a cold `explain` of one prompt, `explain -f` on
10,000 prompts.

    python -m catimg.benchmarks.cli_speed [--prompts 10000] [--repeat 3]

Each command runs in a fresh subprocess with an empty embedding cache (a new CATIMG_CACHE_DIR), so "cold" means
nothing cached: Python start, imports, encoder load, router load, routing and rendering are all counted. The
10,000 prompts are the built-in reference set crossed with styles and subjects (all distinct).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STYLES = ["", ", oil painting", ", photograph", ", watercolour", ", pixel art", ", at night", ", in the snow",
          ", seen from above", ", studio lighting", ", in the style of a children's book"]
EXTRAS = ["", " with a red balloon", " next to a bicycle", " under a rainbow", " on a wooden table", " in a forest",
          " near the sea", " in a busy market", " made of glass", " covered in moss"]


def make_prompts(n: int) -> list[str]:
    from catimg.prompts import reference_set

    base = reference_set("parti-geneval-200")
    out: list[str] = []
    seen: set[str] = set()
    for extra in EXTRAS:
        for style in STYLES:
            for b in base:
                p = f"{b}{extra}{style}"
                if p not in seen:
                    seen.add(p)
                    out.append(p)
                if len(out) == n:
                    return out
    raise SystemExit(f"can only make {len(out)} distinct prompts")


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    exe = [sys.executable, "-m", "catimg"]
    with tempfile.TemporaryDirectory() as tmp:
        pfile = Path(tmp) / "prompts.txt"
        pfile.write_text("\n".join(make_prompts(args.prompts)) + "\n", encoding="utf-8")
        rows = []
        cases = [
            ("catimg --help", exe + ["--help"]),
            ('catimg explain "one prompt" (cold)', exe + ["explain", "a lighthouse at dusk, oil painting"]),
            (f"catimg explain -f <{args.prompts} prompts> --json (cold)", exe + ["explain", "-f", str(pfile), "--json"]),
            (f"catimg explain -f <{args.prompts} prompts> (cold, table)", exe + ["explain", "-f", str(pfile)]),
        ]
        for c, (label, cmd) in enumerate(cases):
            times = []
            for r in range(args.repeat):
                env = dict(os.environ, CATIMG_CACHE_DIR=str(Path(tmp) / f"cache-{c}-{r}"), NO_COLOR="1")
                times.append(timed(cmd, env))
            rows.append((label, statistics.median(times), min(times)))
    print(f"{'command':55s} {'median s':>9s} {'min s':>7s}")
    for label, med, mn in rows:
        print(f"{label:55s} {med:9.2f} {mn:7.2f}")


if __name__ == "__main__":
    main()
