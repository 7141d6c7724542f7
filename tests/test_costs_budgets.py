"""Issue 10, items 8, 9, 10 and 12: one cost rule (explain, gen and eval agree and say where each cost comes
from), spend against a total budget fed back into the cost cache, budget messages that lead somewhere, prompts
longer than the generator's text encoder. Real CLI (``harness.run_cli``), real tiny pipelines, real router
training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny
from harness import run_cli

# seconds per image the router is trained with (the measurements' seconds column)
TRAINED = {"sd@2": (0.6, 0.3, 0.04), "sd@4": (0.62, 0.5, 0.08)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_sd_dir: Path) -> dict[str, Path]:
    """models.toml with sd@2/sd@4 (tiny SD folder) and a router trained on measurements with seconds."""
    root = tmp_path_factory.mktemp("costs")
    models = root / "models.toml"
    models.write_text(
        f'[generators.sd]\nsource = "{tiny_sd_dir}"\nsteps = [2, 4]\nguidance = 2.0\n'
        "width = 64\nheight = 64\n"
    )
    m = tiny.write_measurements(root / "m.csv", TRAINED)
    code, out, err = run_cli("train", "--measurements", m, "--models", models, "--out", root / "router")
    assert code == 0, err
    return {"root": root, "models": models, "router": root / "router", "measurements": m}


def _explain(s: dict[str, Path], *extra: str) -> tuple[dict, str]:
    code, out, err = run_cli(
        "explain",
        "a cat in the park",
        "--models",
        s["models"],
        "--router",
        s["router"],
        "--device",
        "cpu",
        "--json",
        *extra,
    )
    assert code == 0, err
    return json.loads(out), err


def _eval_costs(s: dict[str, Path]) -> dict[str, tuple[float, str]]:
    code, out, err = run_cli(
        "eval",
        "--router",
        s["router"],
        "--measurements",
        s["measurements"],
        "--models",
        s["models"],
        "--device",
        "cpu",
        "--json",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["cost_unit"] == "seconds"
    return {g["name"]: (g["cost"], doc["cost_sources"][g["name"]]) for g in doc["single"]}


def test_item8_one_cost_rule_explain_and_eval_agree_and_name_the_source(trained: dict[str, Path]) -> None:
    # no bench yet: the router's trained-with seconds route (not a FLOP estimate), in explain and in eval
    # alike
    doc, _ = _explain(trained)
    costs = {n: (c["seconds"], c["source"]) for n, c in doc["costs"].items()}
    assert costs == {
        "sd@2": (pytest.approx(0.04), "router data"),
        "sd@4": (pytest.approx(0.08), "router data"),
    }
    assert doc["notes"] == []  # nothing is estimated, so no bench notice
    rows = {r["name"]: r for r in doc["prompts"][0]["generators"]}
    assert rows["sd@2"]["cost_source"] == "router data" and rows["sd@2"]["cost_seconds"] == pytest.approx(
        0.04
    )
    assert _eval_costs(trained) == costs

    # a measurement on this device (what `catimg bench` and gen runs write) outranks the router's seconds
    from catimg.config import load_catalog
    from catimg.costs.bench import BenchResult, model_hash, save_results
    from catimg.device import cpu_device, device_class

    g = load_catalog(trained["models"]).get("sd@2")
    save_results(
        [
            BenchResult(
                generator=g.name,
                settings_hash=g.settings_hash(),
                model_hash=model_hash(g),
                device_class=device_class(cpu_device()),
                dtype="fp32",
                load_seconds=0.3,
                step_seconds=0.01,
                fixed_seconds=0.02,
                peak_memory_gb=None,
                steps_run=3,
                repeats=3,
                warmup=1,
                measured_at="2026-12-02T08:00:00+00:00",
            )
        ],
        cpu_device(),
    )
    doc, _ = _explain(trained)
    measured = {n: (c["seconds"], c["source"]) for n, c in doc["costs"].items()}
    # sd@4 shares sd@2's weights: the per-step time of the measurement carries over to 4 steps
    assert measured == {"sd@2": (pytest.approx(0.04), "measured"), "sd@4": (pytest.approx(0.06), "measured")}
    assert _eval_costs(trained) == measured

    # the text tables name the source too
    code, out, _ = run_cli(
        "explain", "a cat", "--models", trained["models"], "--router", trained["router"], "--device", "cpu"
    )
    assert code == 0 and "cost from" in out and "measured" in out


def test_item8_estimates_drive_routing_say_so_once_and_explicit_cost_follows_the_size(
    tmp_path: Path, tiny_sd_dir: Path
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        f'[generators.sd]\nsource = "{tiny_sd_dir}"\nsteps = 2\nguidance = 2.0\nwidth = 64\nheight = 64\n'
        f'[generators.fixed]\nsource = "{tiny_sd_dir}"\nsteps = 3\nguidance = 2.0\nwidth = 64\n'
        "height = 64\ncost_seconds = 2.0\n"
    )
    # the bundled catalog and router (trained in TFLOPs) on this CPU: estimates route, said once on stderr
    code, out, err = run_cli("explain", "a cat", "a dog", "--device", "cpu")
    assert code == 0, err
    notices = [line for line in err.splitlines() if "catimg bench" in line]
    assert len(notices) == 1 and "sdxl-turbo" in notices[0] and "estimated from FLOPs" in notices[0]
    assert "cost from" in out and "estimated" in out
    code, out, err = run_cli("explain", "a cat", "--device", "cpu", "--json")
    assert (
        code == 0
        and [n for n in json.loads(out)["notes"] if "catimg bench" in n]
        and "catimg bench" not in err
    )
    # a forced generator is not routed: no notice, but the plan still says where its cost comes from
    code, out, err = run_cli(
        "gen",
        "a cat",
        "--models",
        models,
        "--generator",
        "sd",
        "--dry-run",
        "--device",
        "cpu",
        "--out",
        tmp_path / "o",
    )
    assert code == 0 and "catimg bench" not in err, err
    assert "estimated" in out and "cost from" in out
    # an explicit cost_seconds is for the catalog's size: a run at another size rescales it by the FLOP ratio
    code, out, err = run_cli(
        "gen",
        "a cat",
        "--models",
        models,
        "--generator",
        "fixed",
        "--dry-run",
        "--json",
        "--device",
        "cpu",
        "--out",
        tmp_path / "o",
        "--width",
        "128",
        "--height",
        "128",
    )
    assert code == 0, err
    cost = json.loads(out)["routing"]["costs"]["fixed"]
    assert (
        cost["source"] == "explicit"
        and cost["seconds"] > 2.0 * 3
        and "scaled by FLOPs to 128x128" in cost["note"]
    )
    code, out, err = run_cli(
        "gen",
        "a cat",
        "--models",
        models,
        "--generator",
        "fixed",
        "--dry-run",
        "--json",
        "--device",
        "cpu",
        "--out",
        tmp_path / "o",
    )
    assert json.loads(out)["routing"]["costs"]["fixed"]["seconds"] == 2.0


def test_item10_budget_messages_lead_somewhere(trained: dict[str, Path]) -> None:
    import re

    base = (
        "explain",
        "a cat",
        "a dog",
        "--models",
        trained["models"],
        "--router",
        trained["router"],
        "--device",
        "cpu",
    )
    # a per-image budget below the cheapest generator: its name and cost, and the smallest budget that works
    code, out, err = run_cli(*base, "--budget", "10ms")
    assert code == 2 and out == "" and "\n" not in err.strip()
    assert "sd@2 (router data) takes 40 ms per image" in err and "route fewer prompts" not in err
    smallest = re.search(r'--budget "([^"]+)"; or use a level', err)
    assert smallest and smallest.group(1) == "40 ms"
    code, out, err = run_cli(*base, "--budget", smallest.group(1), "--json")  # ... and it does work
    assert code == 0, err
    assert {p["choice"] for p in json.loads(out)["prompts"]} == {"sd@2"}
    assert json.loads(out)["budget"] == "40 ms per image"  # the one duration format
    # a total budget: the cheapest plan (loading included), and that fewer prompts would help
    code, out, err = run_cli(*base, "--total-budget", "50ms")
    assert (
        code == 2 and "below the cheapest plan for these 2 prompt(s)" in err and "route fewer prompts" in err
    )
    total = re.search(r'--total-budget "([^"]+)", or route', err)
    assert total is not None
    code, out, err = run_cli(*base, "--total-budget", total.group(1), "--json")
    assert code == 0, err
    # a negative budget is not "not a duration": it must be positive (exit 2, a usage mistake)
    for option, value in (
        ("--budget", "-5"),
        ("--budget", "-5s"),
        ("--total-budget", "-5"),
        ("--budget", "0"),
    ):
        code, out, err = run_cli(*base, option, value)
        assert code == 2 and f'{option} "{value}" must be positive' in err, err


def test_item10_one_duration_format_reads_back() -> None:
    from catimg.durations import format_duration
    from catimg.routing.budget import parse_duration

    for seconds in (0.0404, 0.5, 2.5, 105.46, 119.9, 3599.0, 7300.0, 123456.0):
        shown = format_duration(seconds, round_up=True)
        back = parse_duration(shown)
        assert back >= seconds and back <= seconds * 1.06 + 0.001, (seconds, shown, back)
    assert format_duration(None) == format_duration(float("nan")) == "-"


def test_item9_total_budget_spend_is_reported_and_measured_times_feed_the_next_plan(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    import re

    from catimg.costs.bench import cache_path

    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat in the park\na dog by the sea\na crowd in the city\n")
    args = (
        "gen",
        "-f",
        prompts,
        "--models",
        trained["models"],
        "--router",
        trained["router"],
        "--device",
        "cpu",
        "--total-budget",
        "30s",
        "--seed",
        "1",
        "-n",
        "2",
    )
    code, out, err = run_cli(*args, "--out", tmp_path / "o", "--json")
    assert code == 0, err
    doc = json.loads(out)
    sp = doc["summary"]["spend"]
    assert sp["budget_seconds"] == 30.0 and sp["actual_seconds"] == pytest.approx(
        doc["summary"]["wall_seconds"]
    )
    assert sp["planned_seconds"] == pytest.approx(
        sum(i["predicted_seconds"] for i in doc["plan"]) + doc["routing"]["planned_load_seconds"]
    )
    assert sp["over_seconds"] == pytest.approx(sp["actual_seconds"] - 30.0)
    made = {g["generator"]: g for g in sp["generators"]}
    assert sum(g["images_made"] for g in made.values()) == 6
    assert all(g["actual_seconds"] > 0 for g in made.values() if g["images_made"])
    assert sum(g["actual_load_seconds"] or 0.0 for g in made.values()) > 0  # the tiny model's load, measured
    # the run's times are in the cost cache that `catimg bench` fills ...
    entries = json.loads(cache_path().read_text())["entries"].values()
    cached = {e["generator"]: e for e in entries if e["source"] == "catimg gen"}
    assert set(cached) == {n for n, g in made.items() if g["images_made"]}
    # ... and the next plan on this device routes by them (not by the router's 40/80 ms)
    code, out, err = run_cli(*args, "--out", tmp_path / "o2", "--json", "--dry-run")
    assert code == 0, err
    costs = json.loads(out)["routing"]["costs"]
    for name, e in cached.items():
        assert costs[name]["source"] == "measured" and "catimg gen" in costs[name]["note"]
        assert costs[name]["seconds"] == pytest.approx(
            e["fixed_seconds"] + e["step_seconds"] * e["steps_run"]
        )
        assert costs[name]["load_seconds"] == pytest.approx(e["load_seconds"])
    # the text summary says the same, against the budget
    code, out, err = run_cli(*args, "--out", tmp_path / "o3")
    assert code == 0, err
    assert "of the 30.0 s budget (planned" in out and "load actual" in out
    assert re.search(
        r"; [\d.]+ (ms|s|min) \(\d+%\) (over|under) budget", out
    )  # which one: the machine's load


def test_item12_long_prompts_are_cut_where_the_real_tokenizer_cuts_and_routed_as_cut(
    trained: dict[str, Path], tmp_path: Path, tiny_sd_dir: Path
) -> None:
    from transformers import CLIPTokenizer

    long = "a crowd in the city at night " + " ".join(f"with lantern number {i}" for i in range(40))
    prompts = tmp_path / "p.txt"
    prompts.write_text(f"a cat\n{long}\n")
    code, out, err = run_cli(
        "gen",
        "-f",
        prompts,
        "--models",
        trained["models"],
        "--router",
        trained["router"],
        "--device",
        "cpu",
        "--dry-run",
        "--json",
        "--out",
        tmp_path / "o",
    )
    assert code == 0, err
    notes = [n for n in json.loads(out)["notes"] if "longer than the 77 tokens" in n]
    assert (
        len(notes) == 1
        and notes[0].startswith("1 of 2 prompt(s)")
        and "counted with the tokenizer of sd@" in notes[0]
    )
    # where the pipeline's own tokenizer (the tiny pipeline's real CLIPTokenizer) cuts: 75 tokens + the 2
    # specials
    tok = CLIPTokenizer.from_pretrained(tiny_sd_dir / "tokenizer")
    seen = tok.decode(tok(long, truncation=True, max_length=77).input_ids, skip_special_tokens=True)
    from catimg.config import load_catalog
    from catimg.prompts import fit_for_run

    fit = fit_for_run(["a cat", long], load_catalog(trained["models"]))
    (cut,) = fit.cuts
    assert (
        cut.index == 1 and " ".join(cut.kept.split()) == " ".join(seen.split()) and len(cut.kept) < len(long)
    )
    words = long.split()
    assert (
        f'prompt 2 after word {cut.words_kept} of {len(words)} (from "{words[cut.words_kept]}" on)'
        in notes[0]
    )
    # the router sees what the generator sees: the long prompt gets the predictions of its cut text
    base = (
        "explain",
        "--models",
        trained["models"],
        "--router",
        trained["router"],
        "--device",
        "cpu",
        "--json",
    )
    docs = []
    for text in (long, cut.kept):
        code, out, err = run_cli(*base[:1], text, *base[1:])
        assert code == 0, err
        docs.append({g["name"]: g["predicted_quality"] for g in json.loads(out)["prompts"][0]["generators"]})
    assert docs[0] == docs[1]
    # text mode: said once, on stderr
    code, out, err = run_cli("explain", "-f", prompts, *base[1:-1])
    assert code == 0 and err.count("longer than the 77 tokens") == 1


def test_item10_the_help_examples_work_or_say_why_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every example in `explain --help` and `gen --help`, run as printed (bundled catalog and router, this
    CPU, no weights, no prompts.txt): it works, or one line says why (the file, this device's costs, the
    missing weights)."""
    import shlex

    monkeypatch.chdir(tmp_path)
    for command in ("explain", "gen"):
        code, out, _ = run_cli(command, "--help")
        examples = [
            shlex.split(line.strip())[1:]
            for line in out.splitlines()
            if line.strip().startswith(f"catimg {command} ")
        ]
        assert code == 0 and len(examples) >= 2
        for args in examples:
            code, out, err = run_cli(*args)
            errors = [line for line in err.splitlines() if line.startswith("error:")]
            assert code == 0 or (
                len(errors) == 1
                and any(
                    why in errors[0]
                    for why in ("prompts.txt: prompt file not found", "on this device", "hf download")
                )
            ), (args, code, err)


def test_item12_a_slow_format_tokenizer_is_converted_once_and_cuts_the_same(
    tmp_path: Path, tiny_sd_dir: Path
) -> None:
    """The SD repos on the Hub ship vocab.json + merges.txt (no tokenizer.json): converted once, kept in the
    cache."""
    import shutil

    from catimg.paths import cache_dir
    from catimg.prompts import fit_prompts

    slow = tmp_path / "slow"
    (slow / "tokenizer").mkdir(parents=True)
    shutil.copy(tiny_sd_dir / "model_index.json", slow)
    tok = tiny.tiny_tokenizer()
    (slow / "tokenizer" / "vocab.json").write_text(json.dumps(tok.get_vocab()))
    (slow / "tokenizer" / "merges.txt").write_text("#version: 0.2\n")
    (slow / "tokenizer" / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
            }
        )
    )
    long = "a crowd in the city at night " + " ".join(f"with lantern number {i}" for i in range(40))
    fast = fit_prompts([long, "a cat"], [tiny.generator("fast", tiny_sd_dir)])
    converted = fit_prompts([long, "a cat"], [tiny.generator("slow", slow)])
    assert (
        converted.cuts == fast.cuts and len(converted.cuts) == 1 and converted.counted_by.endswith("of slow")
    )
    assert len(list((cache_dir() / "tokenizers").glob("*.json"))) == 1
    fit_prompts([long], [tiny.generator("slow", slow)])  # the second time: the cached conversion
    assert len(list((cache_dir() / "tokenizers").glob("*.json"))) == 1


def test_item8_plan_for_another_gpu_does_not_take_the_routers_seconds(trained: dict[str, Path]) -> None:
    args = (
        "plan",
        "a cat",
        "a crowd in the city",
        "--models",
        trained["models"],
        "--router",
        trained["router"],
        "--gpus",
        "1",
        "--budget",
        "max",
        "--json",
    )
    code, out, err = run_cli(*args, "--device", "cpu")
    assert code == 0, err
    here = {w["generator"]: w["seconds_per_image"] for w in json.loads(out)["generators"]}
    code, out, err = run_cli(*args, "--gpu", "H100")
    assert code == 0, err
    h100 = {w["generator"]: w["seconds_per_image"] for w in json.loads(out)["generators"]}
    assert all(here[g] == pytest.approx(TRAINED[g][2]) for g in here)  # this machine: the router's seconds
    assert h100 and all(
        h100[g] < TRAINED[g][2] / 2 for g in h100
    )  # an H100: estimated, far faster than 40/80 ms
