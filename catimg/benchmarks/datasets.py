"""Convert the public quality data sets in ``../shared/data`` into long-format measurements.

    python -m catimg.benchmarks.datasets genai_bench --data ../shared/data --out genai.csv
    python -m catimg.benchmarks.datasets agiqa3k --metric mos_align --out agiqa.csv
    python -m catimg.benchmarks.datasets tifa --out tifa.csv
    python -m catimg.benchmarks.datasets dsg --out dsg.csv
    python -m catimg.benchmarks.datasets pqpp --split train --out pqpp-train.csv

Generator names follow catimg's catalog: GenAI-Bench ``SDXL_Turbo`` -> ``sdxl-turbo``, ``SDXL_Base`` ->
``sdxl``, ``SDXL_2_1`` -> ``sd21`` (it is Stable Diffusion 2.1, not SDXL), ``DeepFloyd_I_XL_v1`` ->
``deepfloyd-if``. By default only generators that run locally with open weights are written; ``--all`` adds
the closed ones. Each data set keeps its own metric name and scale: never mix raw scores across data sets.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from catimg.errors import InputError
from catimg.measurements import write_measurements

GENAI_BENCH_NAMES = {
    "SDXL_Turbo": "sdxl-turbo",
    "SDXL_Base": "sdxl",
    "SDXL_2_1": "sd21",
    "DeepFloyd_I_XL_v1": "deepfloyd-if",
    "Midjourney_6": "midjourney-6",
    "DALLE_3": "dalle-3",
}
GENAI_BENCH_LOCAL = ("sdxl-turbo", "sdxl", "sd21", "deepfloyd-if")

AGIQA_NAMES = {
    "sd1.5_normal": "sd15",
    "sd1.5_lowstep": "sd15-lowstep",
    "sd1.5_lowcorr": "sd15-lowcfg",
    "sd1.5_highcorr": "sd15-highcfg",
    "xl2.2_normal": "sdxl-beta",
    "midjourney_normal": "midjourney",
    "midjourney_lowstep": "midjourney-lowstep",
    "DALLE2_normal": "dalle-2",
    "glide_normal": "glide",
    "AttnGAN_normal": "attngan",
}
AGIQA_LOCAL = ("sd15", "sd15-lowstep", "sd15-lowcfg", "sd15-highcfg", "glide", "attngan")

TIFA_NAMES = {
    "stable_diffusion_v1_1": "sd11",
    "stable_diffusion_v1_5": "sd15",
    "stable_diffusion_v2_1": "sd21",
    "vq_diffusion": "vq-diffusion",
    "mini_dalle": "mini-dalle",
}
DSG_NAMES = {
    "sd1dot1": "sd11",
    "sd1dot5": "sd15",
    "sd2dot1": "sd21",
    "vq-diffusion": "vq-diffusion",
    "mini-dalle": "mini-dalle",
}
TIFA_LOCAL = ("sd11", "sd15", "sd21", "vq-diffusion", "mini-dalle")


def _need(path: Path) -> Path:
    if not path.is_file():
        raise InputError(
            f"{path}: data file not found; pass --data pointing at the shared data folder "
            "(holding genai_bench/, agiqa3k/ ...)"
        )
    return path


def genai_bench(data: Path, include_all: bool = False) -> list[dict[str, Any]]:
    """One row per image: the mean of its 3 human alignment ratings."""
    doc = json.loads(_need(data / "genai_bench" / "genai_image.json").read_text(encoding="utf-8"))
    rows = []
    for item in doc.values():
        for key, ratings in item["models"].items():
            name = GENAI_BENCH_NAMES.get(key, key)
            if not include_all and name not in GENAI_BENCH_LOCAL:
                continue
            rows.append(
                {
                    "prompt": item["prompt"],
                    "generator": name,
                    "score": round(sum(ratings) / len(ratings), 6),
                    "metric": "genai_bench_alignment",
                    "source": "genai_bench",
                }
            )
    return rows


def agiqa3k(data: Path, include_all: bool = False, metric: str = "mos_align") -> list[dict[str, Any]]:
    """One row per image: its MOS for alignment (``mos_align``) or perceptual quality (``mos_quality``)."""
    if metric not in ("mos_align", "mos_quality"):
        raise InputError(f'agiqa3k: metric "{metric}" is unknown; use mos_align or mos_quality')
    rows = []
    with _need(data / "agiqa3k" / "data.csv").open(encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            key = r["name"].rsplit("_", 1)[0]
            name = AGIQA_NAMES.get(key, key)
            if not include_all and name not in AGIQA_LOCAL[:4]:
                continue
            rows.append(
                {
                    "prompt": r["prompt"],
                    "generator": name,
                    "score": float(r[metric]),
                    "metric": f"agiqa3k_{metric}",
                    "source": "agiqa3k",
                }
            )
    return rows


def tifa(data: Path, include_all: bool = False) -> list[dict[str, Any]]:
    """One row per image: the mean of its 2 human faithfulness ratings (TIFA-160)."""
    doc = json.loads(_need(data / "tifa" / "human_annotations_with_scores.json").read_text(encoding="utf-8"))
    rows = []
    for key, item in doc.items():
        model = key[len(item["text_id"]) + 1 :]
        name = TIFA_NAMES.get(model, model)
        if not include_all and name not in TIFA_LOCAL[:3]:
            continue
        rows.append(
            {
                "prompt": item["text"],
                "generator": name,
                "score": float(item["human_avg"]),
                "metric": "tifa_faithfulness",
                "source": "tifa",
            }
        )
    return rows


def dsg(data: Path, include_all: bool = False) -> list[dict[str, Any]]:
    """One row per image: the mean of its 5 Likert consistency ratings (prompt text from the TIFA file)."""
    doc = json.loads(_need(data / "tifa" / "human_annotations_with_scores.json").read_text(encoding="utf-8"))
    text = {item["text_id"]: item["text"] for item in doc.values()}
    ratings: dict[tuple[str, str], list[float]] = defaultdict(list)
    with _need(data / "dsg" / "tifa160-likert-anns.csv").open(encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            name = DSG_NAMES.get(r["t2i_model"], r["t2i_model"])
            if not include_all and name not in TIFA_LOCAL[:3]:
                continue
            try:
                ratings[(r["source_id"], name)].append(float(r["answer"]))
            except ValueError:
                continue
    return [
        {
            "prompt": text[sid],
            "generator": g,
            "score": round(sum(v) / len(v), 6),
            "metric": "dsg_consistency",
            "source": "dsg",
        }
        for (sid, g), v in ratings.items()
        if sid in text
    ]


PQPP_NAMES = {"sdxl_score": "sdxl", "glide_score": "glide"}
PQPP_SPLITS = ("train", "validation")


def pqpp(data: Path, include_all: bool = False, split: str = "both") -> list[dict[str, Any]]:
    """One row per prompt and generator (SDXL 1.0 base, GLIDE): PQPP's per-prompt aggregate human score.

    ``split`` is ``train``, ``validation`` or ``both`` (the repository's own split; its test split is not in
    the shared data). GLIDE does not run in catimg, but it is written even without ``include_all``: without it
    the set has one generator and nothing to route.
    """
    if split not in (*PQPP_SPLITS, "both"):
        raise InputError(f'pqpp: split "{split}" is unknown; use train, validation or both')
    rows = []
    for part in PQPP_SPLITS if split == "both" else (split,):
        with _need(data / "pqpp" / f"{part}.csv").open(encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                for column, name in PQPP_NAMES.items():
                    rows.append(
                        {
                            "prompt": r["best_caption"],
                            "generator": name,
                            "score": float(r[column]),
                            "metric": "pqpp_score",
                            "source": "pqpp",
                        }
                    )
    return rows


DATASETS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "genai_bench": genai_bench,
    "agiqa3k": agiqa3k,
    "tifa": tifa,
    "dsg": dsg,
    "pqpp": pqpp,
}


def default_data_dir() -> Path:
    import os

    return Path(os.environ.get("CATIMG_SHARED_DATA", "../shared/data"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m catimg.benchmarks.datasets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("dataset", choices=sorted(DATASETS))
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="shared data folder (default $CATIMG_SHARED_DATA or ../shared/data)",
    )
    ap.add_argument("--out", type=Path, required=True, help="output file (.csv or .jsonl)")
    ap.add_argument("--all", action="store_true", help="also write generators that cannot run locally")
    ap.add_argument("--metric", default="mos_align", help="agiqa3k only: mos_align or mos_quality")
    ap.add_argument("--split", default="both", help="pqpp only: train, validation or both")
    ap.add_argument(
        "--generators", default=None, help="comma-separated generator names to keep (default: all written)"
    )
    ap.add_argument(
        "--rename",
        default=None,
        help="comma-separated OLD=NEW generator names, e.g. sd15=sd15-tifa (a generator whose settings the "
        "data does not pin down, kept apart from the catalog's)",
    )
    args = ap.parse_args(argv)
    data = args.data or default_data_dir()
    try:
        kwargs: dict[str, Any] = {"include_all": args.all}
        if args.dataset == "agiqa3k":
            kwargs["metric"] = args.metric
        if args.dataset == "pqpp":
            kwargs["split"] = args.split
        rows = DATASETS[args.dataset](data, **kwargs)
    except InputError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    if args.generators:
        keep = [g.strip() for g in args.generators.split(",") if g.strip()]
        have = {r["generator"] for r in rows}
        missing = [g for g in keep if g not in have]
        if missing:
            print(
                f"error: {args.dataset}: no generator {', '.join(missing)}; it has {', '.join(sorted(have))}",
                file=sys.stderr,
            )
            return 2
        rows = [r for r in rows if r["generator"] in keep]
    if args.rename:
        pairs = dict(p.split("=", 1) for p in args.rename.split(",") if "=" in p)
        if not pairs or any(not a.strip() or not b.strip() for a, b in pairs.items()):
            print(f"error: --rename {args.rename}: expected OLD=NEW[,OLD=NEW...]", file=sys.stderr)
            return 2
        rows = [{**r, "generator": pairs.get(r["generator"], r["generator"]).strip()} for r in rows]
    n = write_measurements(rows, args.out)
    gens = sorted({r["generator"] for r in rows})
    prompts = len({r["prompt"] for r in rows})
    print(f"wrote {n} rows ({prompts} prompts x {', '.join(gens)}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
