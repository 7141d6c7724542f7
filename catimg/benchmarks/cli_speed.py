"""Wall-clock and CPU time of the commands people wait on: `catimg --help`, `models`, `doctor`, `explain` of
one prompt (warm and cold), `explain -f` on 10,000 prompts.

    python -m catimg.benchmarks.cli_speed --startup      # the start-up targets only (about a minute)
    python -m catimg.benchmarks.cli_speed [--prompts 10000] [--repeat 3]

The start-up table checks the targets of issue 10 (`--help` <= 0.25 s CPU; `models`, `doctor` <= 1.0 s;
`explain "x"` warm <= 1.5 s) and prints the machine and its load (from /proc/loadavg, before and after), since
on a shared machine wall-clock follows the load. "warm" means the embedding and device caches were filled by
one untimed run first; "cold" runs get an empty CATIMG_CACHE_DIR each: Python start, imports, encoder load,
router load, routing and rendering are all counted. Commands run through the installed `catimg` script next to
this Python (else `python -m catimg`). The 10,000 prompts are the built-in reference set crossed with styles
and subjects (all distinct).
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

STYLES = [
    "",
    ", oil painting",
    ", photograph",
    ", watercolour",
    ", pixel art",
    ", at night",
    ", in the snow",
    ", seen from above",
    ", studio lighting",
    ", in the style of a children's book",
]
EXTRAS = [
    "",
    " with a red balloon",
    " next to a bicycle",
    " under a rainbow",
    " on a wooden table",
    " in a forest",
    " near the sea",
    " in a busy market",
    " made of glass",
    " covered in moss",
]


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
    return timed_cpu(cmd, env)[0]


def timed_cpu(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU (user + system of the child) seconds of one run of ``cmd``."""
    before = os.times()
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    after = os.times()
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return dt, cpu


def catimg_command() -> list[str]:
    script = Path(sys.executable).parent / "catimg"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "catimg"]


def machine() -> str:
    from catimg.device import cpu_name

    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"
    return f"{cpu_name()}, {os.cpu_count()} CPUs; load average (1, 5, 15 min): {load}"


#: (label, arguments, warm, target seconds, what the target bounds: "cpu" or "wall")
STARTUP = [
    ("catimg --help", ["--help"], True, 0.25, "cpu"),
    ("catimg models", ["models"], True, 1.0, "wall"),
    ("catimg doctor", ["doctor"], True, 1.0, "wall"),
    ('catimg explain "x" (warm)', ["explain", "a lighthouse at dusk, oil painting"], True, 1.5, "wall"),
]


def startup(repeat: int) -> None:
    """The start-up targets: median wall and CPU seconds of each command, warm caches, against its target."""
    exe = catimg_command()
    print(f"machine: {machine()}")
    print(f"command: {' '.join(exe)}; {repeat} runs each, medians")
    print(f"{'command':30s} {'wall s':>7s} {'CPU s':>7s} {'target':>14s}")
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, CATIMG_CACHE_DIR=str(Path(tmp) / "cache"), NO_COLOR="1")
        for label, args, warm, target, kind in STARTUP:
            if warm:
                timed_cpu(exe + args, env)  # fills the embedding and device caches
            runs = [timed_cpu(exe + args, env) for _ in range(repeat)]
            wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            ok = (cpu if kind == "cpu" else wall) <= target
            print(
                f"{label:30s} {wall:7.2f} {cpu:7.2f} "
                f"{f'<= {target:g} s {kind}':>14s} {'ok' if ok else 'OVER'}"
            )
    print(f"load after: {machine().rsplit(': ', 1)[1]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--startup", action="store_true", help="Only the start-up targets (--help, models, doctor, explain)."
    )
    args = ap.parse_args()
    if args.startup:
        startup(max(args.repeat, 5))
        return
    exe = [sys.executable, "-m", "catimg"]
    with tempfile.TemporaryDirectory() as tmp:
        pfile = Path(tmp) / "prompts.txt"
        pfile.write_text("\n".join(make_prompts(args.prompts)) + "\n", encoding="utf-8")
        rows = []
        cases = [
            ("catimg --help", exe + ["--help"]),
            ('catimg explain "one prompt" (cold)', exe + ["explain", "a lighthouse at dusk, oil painting"]),
            (
                f"catimg explain -f <{args.prompts} prompts> --json (cold)",
                exe + ["explain", "-f", str(pfile), "--json"],
            ),
            (
                f"catimg explain -f <{args.prompts} prompts> (cold, table)",
                exe + ["explain", "-f", str(pfile)],
            ),
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
