"""Running a routed plan on a Ray cluster (``--engine ray``): one driver, actors that each hold one pipeline.

The driver (this process) has already routed every prompt (the encoder ran once, here). It groups the plan by
generator exactly as the local engine does, cuts each generator's images into chunks (whole batches, so the
batches, and therefore the pixels, are those of the local engine), and hands chunks to actors with
:class:`catimg.schedule.CostScheduler`: actors are given to models in proportion to predicted cost and switch
model only when their model's queue is empty (work stealing), so loads stay few.

Each actor runs :class:`catimg.generate.Executor`'s own batching, seeding and retry code on its device (one GPU,
or CPU slots where the cluster has no GPU) and sends back, per batch, each image's metadata and either the name
of the PNG it wrote (when the output folder is one it sees, e.g. a shared file system or the same machine) or the
PNG bytes (the driver then writes them). The driver alone appends to ``manifest.jsonl`` (and, through the
``on_event`` callback, to the calibration store), as each batch arrives; ``--resume`` therefore works the same
whichever engine wrote the run.

Faults: an actor that dies mid-chunk has its unfinished images re-queued (each image is recorded exactly once)
and a fresh actor takes its place; a model that fails to load on an actor is dropped from the run and its images
are re-planned to their next cheaper generator (``PlanItem.fallbacks``, as the local engine's fallback), which is
said in an ``event`` and in each image's manifest note. Ray itself is optional (``pip install "catimg[ray]"``) and
imported only here, inside functions.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catimg.errors import CatimgError, DeviceError, GenerationError, InputError, first_line
from catimg.generate import (
    Executor,
    ImageRecord,
    PlanItem,
    RunOptions,
    RunResult,
    auto_batch_size,
    resume_todo,
)
from catimg.output import (
    append_manifest,
    image_filename,
    png_bytes,
    prepare_out_dir,
    write_new_file,
)
from catimg.schedule import Chunk, CostScheduler, Work, make_chunks

if TYPE_CHECKING:
    from catimg.config import Generator
    from catimg.device import DeviceInfo

Event = Callable[[str, dict[str, Any]], None]
INSTALL_HINT = 'pip install "catimg[ray]"'
CONNECT_TIMEOUT = 3.0  # seconds to reach --ray-address before giving up
READY_TIMEOUT = 120.0  # seconds for actors to be placed and start
_ENV_PREFIXES = ("CATIMG_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DIFFUSERS_", "XDG_CACHE_HOME")


# ------------------------------------------------------------------------------------------------ Ray access


def import_ray() -> Any:
    """The ``ray`` module, or a one-line DeviceError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise DeviceError(f"--engine ray needs Ray, which is not installed; {INSTALL_HINT}") from None
    return ray


def preflight(address: str | None, workers: int | None = None) -> None:
    """The checks to run before routing when ``--engine ray`` is asked for: Ray installed, address reachable."""
    import_ray()
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: must be 1 or more")
    if address is not None:
        check_address(address)


def check_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail within ``timeout`` seconds when nothing listens at ``address`` (``host:port`` or ``ray://host:port``).

    ``auto`` (a cluster started on this machine with ``ray start``) and ``local`` are not probed here.
    """
    if address in ("auto", "local"):
        return
    target = address
    default_port = 6379
    if target.startswith("ray://"):
        target, default_port = target[len("ray://"):], 10001
    host, sep, port_s = target.rpartition(":")
    if not sep:
        host, port_s = target, str(default_port)
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_s)
    except ValueError:
        raise InputError(f"--ray-address {address}: expected host:port (e.g. 10.0.0.5:6379) or ray://host:10001") from None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = f"no answer within {timeout:g}s" if isinstance(exc, socket.timeout) else (exc.strerror or type(exc).__name__)
        raise DeviceError(
            f"--ray-address {address}: cannot reach a Ray cluster there ({reason}); "
            "check the address and that `ray start --head` runs there, or leave --ray-address out to start a local one"
        ) from None
    if not address.startswith("ray://"):
        problem = _gcs_problem(f"{host}:{port}", timeout)
        if problem is not None:
            raise DeviceError(
                f"--ray-address {address}: something answers there but it is not a Ray cluster's head ({problem}); "
                "pass the address that `ray start --head` printed (port 6379 by default)"
            )


def _gcs_problem(address: str, timeout: float) -> str | None:
    """Ask the head's GCS for its cluster id (what ``ray.init`` does first, but bounded); None when it answers.

    Uses Ray's internal GCS client when this Ray version has it (otherwise the TCP check above is all we do). Its
    C++ log lines are kept off the terminal.
    """
    import threading

    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]
    except Exception:  # pragma: no cover - internal API moved
        return None
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            GcsClient(address=address)
            outcome.append(None)
        except Exception as exc:
            outcome.append(first_line(exc, typed=True, limit=200))

    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        t = threading.Thread(target=ask, daemon=True)
        t.start()
        t.join(timeout)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    if not outcome:
        return f"no answer within {timeout:g}s"
    return outcome[0]


def connect(address: str | None, num_cpus: int | None = None) -> tuple[Any, bool]:
    """Connect to ``address`` (None: start a small local instance, or reuse an initialised one).

    Returns (ray, started_here): the caller shuts Ray down only when it started it.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    import logging

    if address is not None and address != "local":
        check_address(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as exc:
            raise DeviceError(f"--ray-address {address}: cannot connect ({first_line(exc, typed=True, limit=200)}); check the address") from None
        return ray, True
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as exc:
        raise DeviceError(f"--engine ray: could not start a local Ray instance ({first_line(exc, typed=True, limit=200)})") from None
    return ray, True


def describe_event(kind: str, data: dict[str, Any]) -> str | None:
    """A line for people about the Ray-only events (None for the events the local engine also sends)."""
    if kind == "workers":
        ws = data["workers"]
        where = sorted({f"{w['host']} ({w['device']})" for w in ws})
        mode = "write PNGs directly" if all(w["shared"] for w in ws) else "send PNGs to the driver"
        return f"ray: {len(ws)} worker(s) on {', '.join(where)}; workers {mode}"
    if kind == "replan":
        return (f"note: {data['model']} failed to load on a Ray worker ({data['reason']}); its images are "
                "re-planned to the next cheaper generator each prompt allows")
    if kind == "worker-lost":
        return f"ray: worker {data['worker']} died; {data['images']} unfinished image(s) re-queued"
    return None


def cli_events(on_event: Event, line: Callable[[str], None]) -> Event:
    """Wrap the CLI's progress callback so that the Ray-only events are said as one line each."""

    def handle(kind: str, data: dict[str, Any]) -> None:
        text = describe_event(kind, data)
        if text is not None:
            line(text)
        on_event(kind, data)

    return handle


# ------------------------------------------------------------------------------------------------ the actor


class _CollectingExecutor(Executor):
    """The local executor's batching, seeding and retries; results are collected instead of recorded."""

    def __init__(self, options: RunOptions, shared: bool) -> None:
        super().__init__(options)
        self.shared = shared
        self.results: list[dict[str, Any]] = []
        self.position: dict[int, int] = {}  # id(PlanItem) -> plan position

    def _save(self, it: PlanItem, gen: Generator, image: Any, secs: float, status: str, attempts: int, note: str,
              res: RunResult) -> None:
        meta = self._meta(it, gen, secs, status, attempts, note)
        name = image_filename(it.index, it.prompt, gen.name, it.seed)
        data = png_bytes(image, meta if self.opt.metadata else None)
        out: dict[str, Any] = {"pos": self.position[id(it)], "meta": meta, "generator": gen, "status": status,
                               "seconds": secs, "attempts": attempts, "note": note, "error": None, "name": name}
        if self.shared:
            out["file"] = write_new_file(self.opt.out_dir, name, data).name
        else:
            out["png"] = data
        self.results.append(out)

    def _record(self, rec: ImageRecord) -> None:
        meta = self._meta(rec.item, rec.generator, rec.seconds, rec.status, rec.attempts, rec.note)
        meta.update({"file": None, "error": rec.error})
        self.results.append({"pos": self.position[id(rec.item)], "meta": meta, "generator": rec.generator,
                             "status": rec.status, "seconds": rec.seconds, "attempts": rec.attempts,
                             "note": rec.note, "error": rec.error})


class RayWorker:
    """One Ray actor: holds one loaded pipeline (one model) at a time and makes batches of its images."""

    def __init__(self, label: str, device: str | None, options: RunOptions, env: dict[str, str],
                 marker: str | None, threads: int) -> None:
        os.environ.update(env)
        from catimg.device import detect_device

        self.label = label
        self.threads = threads
        self.device = detect_device(device)
        self.out_dir = Path(options.out_dir)
        self.shared = False
        self.write_error: str | None = None
        if marker is not None and (self.out_dir / marker).is_file():
            # the driver's folder is visible here: write the PNGs directly if we can
            probe = self.out_dir / f".catimg-ray-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                probe.write_bytes(b"")
                probe.unlink()
                self.shared = True
            except OSError as exc:
                self.write_error = exc.strerror or type(exc).__name__
        opts = replace(options, device=self.device, loader=None, resume=False, out_dir=self.out_dir)
        self.exec = _CollectingExecutor(opts, self.shared)
        self._threads_set = False

    def info(self) -> dict[str, Any]:
        import platform

        return {"label": self.label, "pid": os.getpid(), "host": platform.node(), "device": self.device,
                "shared": self.shared, "write_error": self.write_error}

    def run(self, items: list[PlanItem], positions: list[int]) -> dict[str, Any]:
        """Make one batch of one generator's images (retries as in the local engine)."""
        if not self._threads_set and self.device.kind == "cpu":
            import torch

            torch.set_num_threads(max(1, self.threads))
            self._threads_set = True
        ex = self.exec
        gen = items[0].generator
        for model in {k[0] for k in ex.cache.pipes} - {gen.model}:
            ex.cache.release_model(model)  # one model at a time on this device
        loads_before = len(ex.cache.loads)
        ex.results = []
        ex.position = {id(it): p for it, p in zip(items, positions, strict=True)}
        try:
            ex._pipe(gen, items[0])
        except Exception as exc:
            return {"load_error": exc.args[0] if isinstance(exc, CatimgError) and exc.args else first_line(exc, typed=True, limit=200),
                    "model": gen.model, "results": [], "loads": []}
        ex.opt.batch_size = len(items)  # the driver cut this batch exactly as the local engine would
        res = RunResult()
        ex._run_generator(gen, items, res)
        loads = ex.cache.loads[loads_before:]
        return {"results": ex.results, "loads": loads,
                "load_seconds": {m: ex.cache.load_seconds.get(m, 0.0) for m in loads}}


# ------------------------------------------------------------------------------------------------ the driver


@dataclass
class RayRun:
    """What the Ray engine did besides the images (for summaries and tests)."""

    workers: list[dict[str, Any]] = field(default_factory=list)
    lost_workers: int = 0
    requeued: int = 0
    replanned: dict[str, str] = field(default_factory=dict)  # model -> reason
    chunks: int = 0


def cluster_workers(resources: dict[str, float], device: str | None, workers: int | None,
                    cpus_per_worker: float) -> tuple[int, float, float]:
    """(actors, CPUs each, GPUs each) for a cluster's resources; DeviceError when none fits."""
    gpus = float(resources.get("GPU", 0.0))
    cpus = float(resources.get("CPU", 0.0))
    want_gpu = device is not None and device.startswith(("cuda", "gpu"))
    use_gpu = gpus >= 1 and (device is None or want_gpu)
    have = ", ".join(f"{k} {v:g}" for k, v in sorted(resources.items()) if k in ("CPU", "GPU", "memory")) or "nothing"
    if want_gpu and gpus < 1:
        raise DeviceError(f"--device {device}: the Ray cluster has no GPU ({have}); drop --device or add GPU nodes")
    if use_gpu:
        n = int(gpus)
        if workers is not None:
            if workers > n:
                raise DeviceError(f"--workers {workers}: the Ray cluster has only {n} GPU(s) ({have})")
            n = workers
        return n, min(1.0, cpus / max(1, n)) if cpus else 0.0, 1.0
    if cpus < cpus_per_worker:
        raise DeviceError(
            f"the Ray cluster has no resources for any generator of the plan ({have}); each worker needs "
            f"{cpus_per_worker:g} CPU or 1 GPU: add nodes or point --ray-address at another cluster"
        )
    n = max(1, int(cpus // cpus_per_worker))
    if workers is not None:
        if workers * cpus_per_worker > cpus:
            raise DeviceError(f"--workers {workers}: the Ray cluster has only {cpus:g} CPU(s) for "
                              f"{cpus_per_worker:g} CPU per worker ({have})")
        n = workers
    return n, cpus_per_worker, 0.0


def _local_threads() -> int:
    """torch's intra-op thread count in this process: what the local engine computes with."""
    import torch

    return int(torch.get_num_threads())


def _worker_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}


def run_plan_ray(
    plan: list[PlanItem],
    options: RunOptions,
    on_event: Event | None = None,
    *,
    address: str | None = None,
    workers: int | None = None,
    device: str | None = None,
    chunk_size: int | None = None,
    cpus_per_worker: float = 1.0,
    shared_output: bool | None = None,
    load_seconds: dict[str, float] | None = None,
    threads: int | None = None,
    stats: RayRun | None = None,
) -> RunResult:
    """Make every image of ``plan`` on Ray; same contract as :func:`catimg.generate.run_plan`.

    ``address``: a running cluster (``host:port``, ``ray://host:port`` or ``auto``); None starts a local instance
    (or uses the one this process already initialised). ``workers``: actors (default: one per GPU, else one per
    ``cpus_per_worker`` CPUs). ``device``: the --device option, applied on each worker. ``shared_output``: None
    detects whether workers see the output folder (else they send PNG bytes); False forces bytes.
    ``load_seconds``: predicted load time per model for the scheduler. ``threads``: torch threads of each CPU
    worker; None uses the local engine's count (torch's default here), because CPU results depend on the thread
    count: the same count gives the local engine's pixels exactly, one thread per worker is faster on a busy
    node. ``stats`` is filled with what happened.
    """
    emit = on_event or (lambda kind, data: None)
    st = stats if stats is not None else RayRun()
    t0 = time.perf_counter()
    res = RunResult()
    out = prepare_out_dir(options.out_dir)
    options = replace(options, out_dir=out)
    positions = list(range(len(plan)))
    if options.resume:
        positions, res.differences = resume_todo(plan, options)
        res.skipped = len(plan) - len(positions)
    if not positions:
        emit("start", {"images": 0, "skipped": res.skipped, "differences": res.differences})
        emit("end", {"interrupted": False})
        res.wall_seconds = time.perf_counter() - t0
        return res

    ray, started = connect(address, None)
    actors: dict[int, Any] = {}
    marker = f".catimg-ray-{uuid.uuid4().hex}"
    marker_path = out / marker
    try:
        marker_path.write_bytes(b"")
        n, cpus_each, gpus_each = cluster_workers(ray.cluster_resources(), device, workers, cpus_per_worker)
        if workers is None:
            n = min(n, len(positions))  # no more actors than images
        # each GPU actor sees only its own GPU (Ray sets CUDA_VISIBLE_DEVICES): cuda:N becomes cuda there
        worker_dev = ("cuda" if device.startswith(("cuda", "gpu")) else device) if device is not None else \
            (None if gpus_each else "cpu")
        Remote = ray.remote(RayWorker).options(num_cpus=cpus_each, num_gpus=gpus_each, max_restarts=0,
                                                max_task_retries=0)
        env = _worker_env()
        n_threads = threads if threads is not None else (_local_threads() if not gpus_each else 1)
        use_marker = None if shared_output is False else marker

        def start_actor(i: int) -> dict[str, Any]:
            actors[i] = Remote.remote(f"ray-{i}", worker_dev, options, env, use_marker, n_threads)
            return {"i": i}

        for i in range(n):
            start_actor(i)
        infos = _ready(ray, actors, n, list(actors))
        for inf in infos:
            if inf["write_error"] is not None:
                raise InputError(
                    f"--out {out}: worker {inf['label']} on {inf['host']} sees the folder but cannot write it "
                    f"({inf['write_error']}); fix its permissions on every node or pick another --out"
                )
            if shared_output and not inf["shared"]:
                raise InputError(f"--out {out}: worker {inf['label']} on {inf['host']} cannot see this folder; "
                                 "use a path every node reaches, or leave shared output to detection")
        st.workers = [{k: v for k, v in inf.items() if k != "device"} | {"device": inf["device"].name} for inf in infos]
        info_by = {int(inf["label"].split("-")[1]): inf for inf in infos}
        emit("workers", {"workers": st.workers})
        emit("start", {"images": len(positions), "skipped": res.skipped, "differences": res.differences})
        _drive(ray, plan, positions, options, emit, res, st, actors, info_by, start_actor, n, chunk_size,
               load_seconds or {})
    except KeyboardInterrupt:
        res.interrupted = True
    finally:
        for a in actors.values():
            try:
                ray.kill(a)
            except Exception:
                pass
        try:
            marker_path.unlink()
        except OSError:
            pass
        if started:
            ray.shutdown()
        res.wall_seconds = time.perf_counter() - t0
    emit("end", {"interrupted": res.interrupted})
    return res


def _ready(ray: Any, actors: dict[int, Any], n: int, which: list[int]) -> list[dict[str, Any]]:
    refs = [actors[i].info.remote() for i in which]
    try:
        return list(ray.get(refs, timeout=READY_TIMEOUT))
    except ray.exceptions.GetTimeoutError:
        have = ray.available_resources()
        raise DeviceError(
            f"the Ray cluster could not place {n} worker(s) within {READY_TIMEOUT:g}s (free: "
            f"{', '.join(f'{k} {v:g}' for k, v in sorted(have.items()) if k in ('CPU', 'GPU')) or 'nothing'}); "
            "no resources for the plan's generators: add nodes or lower --workers"
        ) from None
    except ray.exceptions.RayError as exc:
        raise DeviceError(f"a Ray worker failed to start ({first_line(exc, typed=True, limit=200)}); is catimg installed on every node?") from None


def _drive(ray: Any, plan: list[PlanItem], positions: list[int], options: RunOptions, emit: Event, res: RunResult,
           st: RayRun, actors: dict[int, Any], info_by: dict[int, dict[str, Any]],
           start_actor: Callable[[int], dict[str, Any]], n: int, chunk_size: int | None,
           load_seconds: dict[str, float]) -> None:
    plan = list(plan)  # items may be re-planned (replace) below; the caller's list is left alone
    out = options.out_dir
    # group like Executor._groups: models in order of first use, a model's generators one after another
    by_model: dict[str, dict[str, list[int]]] = {}
    for p in positions:
        g = plan[p].generator
        by_model.setdefault(g.model, {}).setdefault(g.name, []).append(p)
    dev0: DeviceInfo = info_by[min(info_by)]["device"]

    def batch_size(p: int) -> int:
        return options.batch_size or auto_batch_size(dev0, plan[p].peak_memory_gb)

    def work_for(groups: dict[str, dict[str, list[int]]]) -> tuple[list[Work], dict[str, list[int]]]:
        work, items = [], {}
        for model, per_gen in groups.items():
            for name, ps in per_gen.items():
                secs = float(plan[ps[0]].predicted_seconds or 1.0)
                work.append(Work(name, model, len(ps), secs, float(load_seconds.get(model, 0.0))))
                items[name] = ps
        return work, items

    work, items = work_for(by_model)
    chunks: list[Chunk] = []
    next_id = 0

    def chunk_list(ws: list[Work], its: dict[str, list[int]]) -> list[Chunk]:
        nonlocal next_id
        cs = []
        for w in ws:
            bs = batch_size(its[w.generator][0])
            size = chunk_size if chunk_size is not None else 2 * bs
            size = max(bs, (size // bs) * bs)  # whole batches: the same batches as the local engine
            for c in make_chunks([w], size, items={w.generator: its[w.generator]}, total=len(plan)):
                cs.append(replace(c, id=next_id))
                next_id += 1
        return cs

    chunks = chunk_list(work, items)
    st.chunks = len(chunks)
    sched = CostScheduler(work, n, chunks)
    held: dict[int, str | None] = dict.fromkeys(actors)
    pending: dict[Any, tuple[int, list[int]]] = {}  # ref -> (actor, plan positions)
    idle: set[int] = set()
    failed_models: dict[str, str] = {}
    recorded: set[int] = set()
    replan_note: dict[int, str] = {}
    replacements = n
    next_actor = max(actors) + 1

    def inflight(i: int) -> int:
        return sum(1 for a, _ in pending.values() if a == i)

    def dispatch(i: int) -> None:
        c = sched.next(i, held[i])
        while c is not None and c.model in failed_models:
            c = sched.next(i, None)
        if c is None:
            idle.add(i)
            return
        idle.discard(i)
        ps = [p for p in c.items if p not in recorded]
        if not ps:
            dispatch(i)
            return
        if held[i] != c.model:
            g = plan[ps[0]].generator
            emit("load", {"model": g.model, "source": g.source, "worker": info_by[i]["label"]})
            held[i] = c.model
        bs = batch_size(ps[0])
        for s in range(0, len(ps), bs):
            b = ps[s:s + bs]
            ref = actors[i].run.remote([plan[p] for p in b], b)
            pending[ref] = (i, b)

    def wake() -> None:
        for j in sorted(idle):
            if j in actors and sched.pending:
                dispatch(j)

    def requeue(ps: list[int]) -> None:
        ps = [p for p in ps if p not in recorded]
        if not ps:
            return
        groups: dict[str, dict[str, list[int]]] = {}
        for p in ps:
            g = plan[p].generator
            groups.setdefault(g.model, {}).setdefault(g.name, []).append(p)
        ws, its = work_for(groups)
        sched.requeue(chunk_list(ws, its))
        st.requeued += len(ps)

    def replan(model: str, reason: str, ps: list[int]) -> None:
        if model not in failed_models:
            failed_models[model] = reason
            st.replanned[model] = reason
            ps = ps + [q for c in sched.drop_model(model) for q in c.items]
            emit("replan", {"model": model, "reason": reason})
        moved: list[int] = []
        for p in ps:
            if p in recorded:
                continue
            it = plan[p]
            fb = [g for g in it.fallbacks if g.model not in failed_models]
            if fb:
                plan[p] = replace(it, generator=fb[0], fallbacks=tuple(fb[1:]))
                replan_note[p] = f"re-planned from {it.generator.name} (failed to load on a Ray worker) to {fb[0].name}"
                moved.append(p)
            else:
                _write_failed(plan[p], f"generator {it.generator.name} could not load ({reason}); no other "
                              "generator allowed for this prompt", p)
        requeue(moved)
        st.requeued -= len(moved)

    def _write_failed(it: PlanItem, error: str, p: int) -> None:
        rec = ImageRecord(item=it, status="failed", generator=it.generator, attempts=1, error=error,
                          note="re-planned: its generator failed to load")
        meta = _failed_meta(it, options, error)
        meta["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        append_manifest(out, meta)
        recorded.add(p)
        res.records.append(rec)
        emit("image", {"record": rec})

    for i in sorted(actors):
        dispatch(i)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        ref = ready[0]
        i, b = pending.pop(ref)
        try:
            outd = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            # the actor died: its unfinished images go back to the queue, a fresh actor takes its place
            lost = list(b)
            for r in [r for r, (a, _) in pending.items() if a == i]:
                lost.extend(pending.pop(r)[1])
            actors.pop(i, None)
            sched.retire(i)
            st.lost_workers += 1
            emit("worker-lost", {"worker": info_by[i]["label"], "images": len(lost), "error": first_line(exc, typed=True, limit=200)})
            requeue(lost)
            if replacements > 0:
                replacements -= 1
                j = next_actor
                next_actor += 1
                start_actor(j)
                info = _ready(ray, actors, 1, [j])[0]
                info_by[j] = info
                held[j] = None
                st.workers.append({k: v for k, v in info.items() if k != "device"} | {"device": info["device"].name})
                dispatch(j)
            elif not actors:
                raise GenerationError("every Ray worker died; rerun with --resume to finish the images not recorded") from None
            wake()
            continue
        except ray.exceptions.RayTaskError as exc:  # an unexpected error in the worker: record the batch as failed
            for p in b:
                if p not in recorded:
                    _write_failed(plan[p], first_line(exc, typed=True, limit=200), p)
            if i in actors and inflight(i) == 0:
                dispatch(i)
            continue
        if "load_error" in outd:
            held[i] = None
            replan(outd["model"], outd["load_error"], list(b))
            if inflight(i) == 0:
                dispatch(i)
            wake()
            continue
        for m in outd["loads"]:
            res.loads.append(m)
            res.load_seconds[m] = res.load_seconds.get(m, 0.0) + outd["load_seconds"].get(m, 0.0)
        for r in outd["results"]:
            p = r["pos"]
            if p in recorded:  # a result that arrived twice (never expected): keep the first
                continue
            it = plan[p]
            meta = dict(r["meta"])
            path = None
            if "png" in r:
                path = write_new_file(out, r["name"], r["png"])
            elif r.get("file"):
                path = out / r["file"]
            if r["status"] != "failed":
                meta["file"] = path.name if path is not None else None
            if p in replan_note:
                meta["note"] = f"{replan_note[p]}; {meta['note']}" if meta.get("note") else replan_note[p]
            meta["worker"] = info_by[i]["label"]
            meta["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            append_manifest(out, meta)
            recorded.add(p)
            rec = ImageRecord(item=it, status=r["status"], generator=r["generator"], file=path,
                              seconds=r["seconds"], attempts=r["attempts"], error=r["error"], note=meta["note"])
            res.records.append(rec)
            emit("image", {"record": rec})
        if i in actors and inflight(i) <= 1 and i not in idle:
            dispatch(i)  # keep one batch queued at the actor so that it never waits for the driver
    left = [p for p in positions if p not in recorded]
    if left:
        raise GenerationError(f"{len(left)} image(s) could not be scheduled on the Ray cluster; rerun with --resume")


def _failed_meta(it: PlanItem, options: RunOptions, error: str) -> dict[str, Any]:
    from catimg import __version__

    g = it.generator
    return {
        "index": it.index, "image": it.image, "prompt": it.prompt, "negative_prompt": it.negative, "seed": it.seed,
        "base_seed": options.base_seed, "generator": g.name, "routed_generator": g.name, "model": g.model,
        "source": g.source, "family": g.family, "steps": g.steps, "guidance": g.guidance, "width": g.width,
        "height": g.height, "scheduler": g.scheduler, "dtype": None, "device": None, "device_name": None,
        "predicted_quality": it.predicted_quality, "predicted_seconds": it.predicted_seconds,
        "measured_seconds": 0.0, "budget": options.budget, "lambda": it.lam, "catimg_version": __version__,
        "router_version": options.router_version, "status": "failed", "attempts": 1,
        "note": "re-planned: its generator failed to load", "file": None, "error": error,
    }
