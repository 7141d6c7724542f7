"""Benchmarks and data scripts: commands that print numbers, run with ``python -m catimg.benchmarks.<name>``.

``routing`` (held-out routing quality per data set), ``train_scale`` (training at 100,000 prompts),
``fewshot`` (a new generator after a short calibration), ``learning_curve`` (routing against the number of
training prompts, and with prompts scored on one generator), ``costs`` (estimated against measured seconds),
``overhead`` (gen against a plain diffusers script), ``cli_speed`` (start-up times), ``cluster_plan`` and
``ray_throughput`` (the Ray engine), and ``datasets``: the converters from the public data sets in
``../shared/data`` to long-format measurements, which the benchmarks and the bundled router's rebuild use.
Nothing in the core imports this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_module() -> Any:
    """``tests/tiny.py`` (real tiny diffusers pipelines from configs), loaded from a source checkout."""
    import importlib.util

    here = Path(__file__).resolve().parents[2] / "tests" / "tiny.py"
    spec = importlib.util.spec_from_file_location("catimg_tiny", here)
    if spec is None or spec.loader is None or not here.is_file():
        raise SystemExit(f"{here}: tests/tiny.py not found; run the benchmarks from a source checkout")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
