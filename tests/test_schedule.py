"""The cluster scheduling policy and its makespan predictor, on small plans worked out by hand."""

from __future__ import annotations

import pytest

from catimg.errors import InputError
from catimg.generation.schedule import (
    CostScheduler,
    Work,
    assign_workers,
    make_chunks,
    simulate_cost,
    simulate_round_robin,
    work_from_shares,
)


def three_models() -> list[Work]:
    return [Work("a", "ma", 40, 1.0, 10.0), Work("b", "mb", 40, 1.0, 10.0), Work("c", "mc", 40, 1.0, 10.0)]


def test_assignment_is_proportional_to_predicted_work() -> None:
    work = [Work("a", "ma", 600, 1.0, 5.0), Work("b", "mb", 150, 2.0, 5.0), Work("c", "mc", 50, 2.0, 5.0)]
    assert assign_workers(work, 10) == {"ma": 6, "mb": 3, "mc": 1}
    assert assign_workers(work, 2) == {"ma": 1, "mb": 1, "mc": 0}
    # never more workers than a model has chunks
    chunks = make_chunks(work, chunk_size=300)
    assert assign_workers(work, 10, chunks) == {"ma": 2, "mb": 1, "mc": 1}


def test_step_variants_of_one_model_share_workers() -> None:
    work = [Work("x@10", "x", 100, 1.0, 5.0), Work("x@50", "x", 100, 5.0, 5.0), Work("y", "y", 600, 1.0, 5.0)]
    assert assign_workers(work, 4) == {"x": 2, "y": 2}


def test_cost_policy_exact_makespan_with_stealing() -> None:
    # 3 models × 4 chunks of 10 s, load 10 s, 2 workers: w0 loads ma (10) + 40 s, w1 loads mb (10) + 40 s;
    # at t=50 both steal mc (nobody serves it / 30 s left over 2 workers > 10 s load): load 10 + 2 chunks
    # each.
    p = simulate_cost(three_models(), workers=2, chunk_size=10)
    assert p.makespan == pytest.approx(80.0)
    assert p.loads == 4
    assert p.busy_seconds == pytest.approx(120.0)
    assert p.load_seconds == pytest.approx(40.0)
    assert p.utilisation == pytest.approx(120.0 / 160.0)
    assert p.ideal == pytest.approx(60.0)


def test_round_robin_exact_makespan() -> None:
    # plan order interleaves a0 b0 c0 a1 b1 c1 ...: every chunk a worker gets needs another model: 6 loads
    # each
    p = simulate_round_robin(three_models(), workers=2, chunk_size=10)
    assert p.loads == 12
    assert p.makespan == pytest.approx(6 * 10 + 6 * 10)
    assert p.utilisation == pytest.approx(120.0 / 240.0)


def test_round_robin_equals_cost_when_order_matches_workers() -> None:
    work = [Work("a", "ma", 100, 1.0, 10.0), Work("b", "mb", 100, 1.0, 10.0)]
    assert simulate_round_robin(work, 2, 10).makespan == pytest.approx(110.0)
    assert simulate_cost(work, 2, 10).makespan == pytest.approx(110.0)


def test_stealing_not_worth_a_load_retires() -> None:
    # a: one 1 s chunk left while w1 finishes b; loading a (100 s) to help is not worth it
    work = [Work("a", "ma", 2, 1.0, 100.0), Work("b", "mb", 1, 1.0, 1.0)]
    p = simulate_cost(work, workers=2, chunk_size=1)
    assert p.loads == 2
    assert p.makespan == pytest.approx(102.0)


def test_single_worker_loads_each_model_once() -> None:
    p = simulate_cost(three_models(), workers=1, chunk_size=7)
    assert p.loads == 3
    assert p.makespan == pytest.approx(150.0)
    assert p.utilisation == pytest.approx(120.0 / 150.0)


def test_requeue_puts_chunks_back_first_and_each_chunk_is_handed_out_once() -> None:
    work = three_models()
    chunks = make_chunks(work, 10)
    s = CostScheduler(work, 3, chunks)
    got = [s.next(0, None), s.next(1, None)]
    assert got[0] is not None and got[1] is not None
    s.retire(1)
    s.requeue(got[1])
    seen = [got[0].id]
    for _ in range(100):
        c = s.next(0, "ma") or s.next(2, None)
        if c is None:
            break
        seen.append(c.id)
    assert sorted(seen) == [c.id for c in chunks]


def test_drop_model_returns_its_chunks() -> None:
    work = three_models()
    s = CostScheduler(work, 2, make_chunks(work, 10))
    dropped = s.drop_model("mb")
    assert [c.generator for c in dropped] == ["b"] * 4
    assert s.pending == 8


def test_work_from_shares_scales_exactly() -> None:
    class C:
        def __init__(self, s: float, load: float) -> None:
            self.seconds, self.load_seconds = s, load

    w = work_from_shares(
        {"t": 1, "s": 1, "x": 1},
        {"t": C(0.1, 3), "s": C(2, 4), "x": C(5, 6)},
        {"t": "t", "s": "s", "x": "x"},
        scale_to=1_000_000,
    )
    assert sum(x.images for x in w) == 1_000_000
    assert {x.generator: x.images for x in w} == {"t": 333333, "s": 333334, "x": 333333}  # tie: by name


def test_bad_worker_count() -> None:
    with pytest.raises(InputError, match="--gpus 0"):
        simulate_cost(three_models(), 0)
    with pytest.raises(InputError, match="--gpus 0"):
        simulate_round_robin(three_models(), 0)


def test_hypothetical_gpu() -> None:
    from catimg.generation.schedule import hypothetical_gpu

    d = hypothetical_gpu("H100")
    assert d.kind == "cuda" and d.total_memory_gb == 80.0 and "H100" in d.name
    with pytest.raises(InputError, match='--gpu "H1000"'):
        hypothetical_gpu("H1000")


def test_plan_command_predicts_for_k_gpus() -> None:
    import json

    from typer.testing import CliRunner

    from catimg.cli import app

    r = CliRunner().invoke(
        app,
        [
            "plan",
            "a red apple",
            "a crowd in a colourful park",
            "an empty wall",
            "--gpu",
            "H100",
            "--scale-to",
            "1000000",
            "--gpus",
            "8,64",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["prompts"] == 1_000_000 and doc["routed_prompts"] == 3
    assert sum(g["images"] for g in doc["generators"]) == 1_000_000
    assert [p["gpus"] for p in doc["predictions"]] == [8, 64]
    for p in doc["predictions"]:
        assert p["cost"]["makespan_seconds"] <= p["round_robin"]["makespan_seconds"]
        assert p["cost"]["makespan_seconds"] >= p["cost"]["ideal_seconds"]
    bad = CliRunner().invoke(app, ["plan", "x", "--gpus", "0"])
    assert isinstance(bad.exception, InputError) and "--gpus 0" in str(bad.exception)
