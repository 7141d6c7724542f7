"""Running a routed plan on a Ray cluster (``--engine ray``): one driver, actors that each hold one pipeline.

The driver (this process) has already routed every prompt (the encoder ran once, here). It is built from the
execution core the local engine uses (:mod:`catimg.generation.execution`):
:func:`~catimg.generation.execution.start_run` (output folder, ``--resume``),
:func:`~catimg.generation.execution.group_plan` and :func:`~catimg.generation.execution.batch_size` to cut
each generator's images into chunks of whole batches (so the batches, and therefore the pixels, are those of
the local engine), and one :class:`~catimg.generation.execution.Recorder`. :class:`RayDriver` hands the chunks
to actors with :class:`catimg.generation.schedule.CostScheduler`: actors are given to models in proportion to
predicted cost and switch model only when their model's queue is empty (work stealing), so loads stay few.

Each actor (:class:`RayWorker`) makes its batches with the local engine's
:class:`~catimg.generation.execution.BatchRunner` (same seeding, step calls and retries) on its device (one
GPU, or CPU slots where the cluster has no GPU) and sends back, per batch, a :class:`BatchReply`: each image's
:class:`~catimg.generation.execution.Outcome` (with its :class:`~catimg.generation.output.ManifestRecord`) and
either the name of the PNG it wrote (when the output folder is one it sees, e.g. a shared file system or the
same machine) or the PNG bytes (the driver then writes them). The driver alone appends to ``manifest.jsonl``
(and, through the ``on_image`` hook, to the calibration store), as each batch arrives; the records are those
the local engine writes (plus the ``worker``), and ``--resume`` works the same whichever engine wrote the run.

Faults: an actor that dies mid-chunk has its unfinished images re-queued (each image is recorded exactly once)
and a fresh actor takes its place; a model that fails to load on an actor is dropped from the run and its
images are re-planned to their next cheaper generator (``PlanItem.fallbacks``, as the local engine's
fallback), which is said in a :class:`~catimg.generation.events.Replanned` event and in each image's manifest
note. Progress goes to an ``on_event(event)`` callback with the typed events of
:mod:`catimg.generation.events` (plus the Ray-only :class:`~catimg.generation.events.WorkersStarted`,
:class:`~catimg.generation.events.Replanned` and :class:`~catimg.generation.events.WorkerLost`, which
:func:`describe_event` says as one line each). :class:`RayEngine` is :func:`run_plan_ray` as an
:class:`~catimg.generation.execution.Engine`, the Protocol the local engine
(:class:`catimg.generation.generate.LocalEngine`) satisfies too: the CLI and the calibration campaign call
either through it. Ray itself is optional (``pip install "catimg[ray]"``) and imported only here, inside
functions.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catimg.errors import CatimgError, DeviceError, GenerationError, InputError, first_line
from catimg.generation.events import (
    Event,
    ModelLoading,
    OnEvent,
    OnImage,
    Replanned,
    RunEnded,
    RunStarted,
    WorkerLost,
    WorkersStarted,
    no_events,
)
from catimg.generation.execution import (
    BatchRunner,
    Job,
    Outcome,
    Pipelines,
    Recorder,
    RunOptions,
    RunResult,
    batch_size,
    batches,
    describe,
    group_plan,
    start_run,
)
from catimg.generation.output import write_new_file
from catimg.generation.schedule import Chunk, CostScheduler, Work, make_chunks

if TYPE_CHECKING:
    from catimg.device import DeviceInfo
    from catimg.generation.generate import PlanItem

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
    """The checks to run before routing when ``--engine ray`` is asked for: Ray installed, address
    reachable."""
    import_ray()
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: must be 1 or more")
    if address is not None:
        check_address(address)


def check_address(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail within ``timeout`` seconds when nothing listens at ``address`` (``host:port`` or
    ``ray://host:port``).

    ``auto`` (a cluster started on this machine with ``ray start``) and ``local`` are not probed here.
    """
    if address in ("auto", "local"):
        return
    target = address
    default_port = 6379
    if target.startswith("ray://"):
        target, default_port = target[len("ray://") :], 10001
    host, sep, port_s = target.rpartition(":")
    if not sep:
        host, port_s = target, str(default_port)
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_s)
    except ValueError:
        raise InputError(
            f"--ray-address {address}: expected host:port (e.g. 10.0.0.5:6379) or ray://host:10001"
        ) from None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = (
            f"no answer within {timeout:g}s"
            if isinstance(exc, socket.timeout)
            else (exc.strerror or type(exc).__name__)
        )
        raise DeviceError(
            f"--ray-address {address}: cannot reach a Ray cluster there ({reason}); check the address "
            "and that `ray start --head` runs there, or leave --ray-address out to start a local one"
        ) from None
    if not address.startswith("ray://"):
        problem = _gcs_problem(f"{host}:{port}", timeout)
        if problem is not None:
            raise DeviceError(
                f"--ray-address {address}: something answers there but it is not a Ray cluster's head "
                f"({problem}); pass the address that `ray start --head` printed (port 6379 by default)"
            )


def _gcs_problem(address: str, timeout: float) -> str | None:
    """Ask the head's GCS for its cluster id (what ``ray.init`` does first, but bounded); None when it
    answers.

    Uses Ray's internal GCS client when this Ray version has it (otherwise the TCP check above is all we do).
    Its C++ log lines are kept off the terminal.
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
            ray.init(
                address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR
            )
        except Exception as exc:
            raise DeviceError(
                f"--ray-address {address}: cannot connect ({first_line(exc, typed=True, limit=200)}); "
                "check the address"
            ) from None
        return ray, True
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    except Exception as exc:
        raise DeviceError(
            f"--engine ray: could not start a local Ray instance ({first_line(exc, typed=True, limit=200)})"
        ) from None
    return ray, True


def describe_event(event: Event) -> str | None:
    """A line for people about the Ray-only events (None for the events the local engine also sends)."""
    if isinstance(event, WorkersStarted):
        ws = event.workers
        where = sorted({f"{w.host} ({w.device.name})" for w in ws})
        mode = "write PNGs directly" if all(w.shared for w in ws) else "send PNGs to the driver"
        return f"ray: {len(ws)} worker(s) on {', '.join(where)}; workers {mode}"
    if isinstance(event, Replanned):
        return (
            f"note: {event.model} failed to load on a Ray worker ({event.reason}); its images are "
            "re-planned to the next cheaper generator each prompt allows"
        )
    if isinstance(event, WorkerLost):
        return f"ray: worker {event.worker} died; {event.images} unfinished image(s) re-queued"
    return None


def cli_events(on_event: OnEvent, line: Callable[[str], None]) -> OnEvent:
    """Wrap the CLI's progress callback so that the Ray-only events are said as one line each."""

    def handle(event: Event) -> None:
        text = describe_event(event)
        if text is not None:
            line(text)
        on_event(event)

    return handle


# ------------------------------------------------------------------------------------------------ the actor


@dataclass(frozen=True)
class WorkerInfo:
    """Who a Ray worker is, and whether it writes the PNGs into the driver's output folder itself."""

    label: str
    pid: int
    host: str
    device: DeviceInfo
    shared: bool  # sees and can write the output folder
    write_error: str | None  # sees the folder but cannot write it: why

    def summary(self) -> dict[str, Any]:
        """For :class:`RayRun` (the device by name)."""
        return {
            "label": self.label,
            "pid": self.pid,
            "host": self.host,
            "shared": self.shared,
            "write_error": self.write_error,
            "device": self.device.name,
        }


@dataclass(frozen=True)
class WorkerImage:
    """One image's outcome as a worker sends it back: PNG bytes, or the name of the PNG it wrote itself."""

    outcome: Outcome  # without the image
    png: bytes | None = None
    file: str | None = None


@dataclass(frozen=True)
class BatchReply:
    """A worker's answer for one batch: its images, the models it loaded, or why its model did not load."""

    model: str
    images: tuple[WorkerImage, ...] = ()
    loads: tuple[str, ...] = ()
    load_seconds: dict[str, float] = field(default_factory=dict)
    load_error: str | None = None


def _sees_folder(out_dir: Path, marker: str | None) -> tuple[bool, str | None]:
    """(this process can write into the driver's folder, why not when it sees the folder but cannot write
    it)."""
    if marker is None or not (out_dir / marker).is_file():
        return False, None
    probe = out_dir / f".catimg-ray-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return False, exc.strerror or type(exc).__name__
    return True, None


class RayWorker:
    """One Ray actor: holds one loaded pipeline (one model) at a time and makes batches of its images with the
    local engine's :class:`catimg.generation.execution.BatchRunner` (same seeding, same retries)."""

    def __init__(
        self,
        label: str,
        device: str | None,
        options: RunOptions,
        env: dict[str, str],
        marker: str | None,
        threads: int,
    ) -> None:
        os.environ.update(env)
        from catimg.device import detect_device

        self.label = label
        self.threads = threads
        self.device = detect_device(device)
        out_dir = Path(options.out_dir)
        self.shared, self.write_error = _sees_folder(out_dir, marker)
        self.options = replace(options, device=self.device, loader=None, resume=False, out_dir=out_dir)
        self.pipes = Pipelines(self.options)
        self.runner = BatchRunner(self.options, self.pipes, self._collect)
        self.made: list[WorkerImage] = []
        self._threads_set = False

    def info(self) -> WorkerInfo:
        import platform

        return WorkerInfo(
            self.label, os.getpid(), platform.node(), self.device, self.shared, self.write_error
        )

    def run(self, jobs: list[Job]) -> BatchReply:
        """Make one batch of one generator's images (the driver cut it exactly as the local engine would)."""
        if not self._threads_set and self.device.kind == "cpu":
            import torch

            torch.set_num_threads(max(1, self.threads))
            self._threads_set = True
        cache = self.pipes.cache
        gen = jobs[0].item.generator
        for model in cache.models() - {gen.model}:
            cache.release_model(model)  # one model at a time on this device
        loads_before = len(cache.loads)
        self.made = []
        try:
            loaded = self.pipes.get(gen, jobs[0].item)
        except Exception as exc:
            why = (
                exc.args[0]
                if isinstance(exc, CatimgError) and exc.args
                else first_line(exc, typed=True, limit=200)
            )
            return BatchReply(gen.model, load_error=why)
        self.runner.run_batch(loaded, gen, jobs)
        loads = tuple(cache.loads[loads_before:])
        return BatchReply(
            gen.model, tuple(self.made), loads, {m: cache.load_seconds.get(m, 0.0) for m in loads}
        )

    def _collect(self, outcome: Outcome) -> None:
        if outcome.image is None:  # failed: nothing to write
            self.made.append(WorkerImage(outcome))
            return
        data = outcome.png(self.options.metadata)
        bare = replace(outcome, image=None)
        if self.shared:
            self.made.append(
                WorkerImage(bare, file=write_new_file(self.options.out_dir, outcome.file_name(), data).name)
            )
        else:
            self.made.append(WorkerImage(bare, png=data))


# ------------------------------------------------------------------------------------------------ the driver


@dataclass
class RayRun:
    """What the Ray engine did besides the images (for summaries and tests)."""

    workers: list[dict[str, Any]] = field(default_factory=list)
    lost_workers: int = 0
    requeued: int = 0
    replanned: dict[str, str] = field(default_factory=dict)  # model -> reason
    chunks: int = 0


def cluster_workers(
    resources: dict[str, float], device: str | None, workers: int | None, cpus_per_worker: float
) -> tuple[int, float, float]:
    """(actors, CPUs each, GPUs each) for a cluster's resources; DeviceError when none fits."""
    gpus = float(resources.get("GPU", 0.0))
    cpus = float(resources.get("CPU", 0.0))
    want_gpu = device is not None and device.startswith(("cuda", "gpu"))
    use_gpu = gpus >= 1 and (device is None or want_gpu)
    have = (
        ", ".join(f"{k} {v:g}" for k, v in sorted(resources.items()) if k in ("CPU", "GPU", "memory"))
        or "nothing"
    )
    if want_gpu and gpus < 1:
        raise DeviceError(
            f"--device {device}: the Ray cluster has no GPU ({have}); drop --device or add GPU nodes"
        )
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
            raise DeviceError(
                f"--workers {workers}: the Ray cluster has only {cpus:g} CPU(s) for "
                f"{cpus_per_worker:g} CPU per worker ({have})"
            )
        n = workers
    return n, cpus_per_worker, 0.0


def _local_threads() -> int:
    """torch's intra-op thread count in this process: what the local engine computes with."""
    import torch

    return int(torch.get_num_threads())


def _worker_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}


class WorkerPool:
    """The driver's Ray actors by number, and what each said about itself when it started."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self.remote: Any = None  # the actor class, with its resources
        self.args: tuple[Any, ...] = ()  # the arguments of RayWorker after its label
        self.actors: dict[int, Any] = {}
        self.infos: dict[int, WorkerInfo] = {}
        self._next = 0

    def start(self, n: int) -> list[int]:
        """Start ``n`` more actors and wait until each is placed and running; their numbers."""
        which = []
        for _ in range(n):
            i, self._next = self._next, self._next + 1
            self.actors[i] = self.remote.remote(f"ray-{i}", *self.args)
            which.append(i)
        for i, info in zip(which, self._ready(which), strict=True):
            self.infos[i] = info
        return which

    def _ready(self, which: list[int]) -> list[WorkerInfo]:
        ray = self.ray
        refs = [self.actors[i].info.remote() for i in which]
        try:
            return list(ray.get(refs, timeout=READY_TIMEOUT))
        except ray.exceptions.GetTimeoutError:
            have = ray.available_resources()
            free = (
                ", ".join(f"{k} {v:g}" for k, v in sorted(have.items()) if k in ("CPU", "GPU")) or "nothing"
            )
            raise DeviceError(
                f"the Ray cluster could not place {len(which)} worker(s) within {READY_TIMEOUT:g}s "
                f"(free: {free}); "
                "no resources for the plan's generators: add nodes or lower --workers"
            ) from None
        except ray.exceptions.RayError as exc:
            raise DeviceError(
                f"a Ray worker failed to start ({first_line(exc, typed=True, limit=200)}); "
                "is catimg installed on every node?"
            ) from None

    def remove(self, i: int) -> None:
        self.actors.pop(i, None)

    def kill_all(self) -> None:
        for a in self.actors.values():
            try:
                self.ray.kill(a)
            except Exception:
                pass


def run_plan_ray(
    plan: list[PlanItem],
    options: RunOptions,
    on_event: OnEvent | None = None,
    on_image: OnImage | None = None,
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
    """Make every image of ``plan`` on Ray; same contract as :func:`catimg.generation.generate.run_plan`.

    ``address``: a running cluster (``host:port``, ``ray://host:port`` or ``auto``); None starts a local
    instance (or uses the one this process already initialised). ``workers``: actors (default: one per GPU,
    else one per ``cpus_per_worker`` CPUs). ``device``: the --device option, applied on each worker.
    ``shared_output``: None detects whether workers see the output folder (else they send PNG bytes); False
    forces bytes. ``load_seconds``: predicted load time per model for the scheduler. ``threads``: torch
    threads of each CPU worker; None uses the local engine's count (torch's default here), because CPU results
    depend on the thread count: the same count gives the local engine's pixels exactly, one thread per worker
    is faster on a busy node. ``stats`` is filled with what happened.
    """
    emit = on_event or no_events
    st = stats if stats is not None else RayRun()
    t0 = time.perf_counter()
    options, positions, res = start_run(plan, options)
    if not positions:
        emit(RunStarted(images=0, skipped=res.skipped, differences=tuple(res.differences)))
        emit(RunEnded(interrupted=False))
        res.wall_seconds = time.perf_counter() - t0
        return res
    ray, started = connect(address, None)
    pool = WorkerPool(ray)
    marker = options.out_dir / f".catimg-ray-{uuid.uuid4().hex}"
    try:
        marker.write_bytes(b"")
        _start_workers(
            pool,
            options,
            len(positions),
            None if shared_output is False else marker.name,
            workers=workers,
            device=device,
            cpus_per_worker=cpus_per_worker,
            threads=threads,
        )
        _check_output(pool, options.out_dir, shared_output)
        st.workers = [info.summary() for info in pool.infos.values()]
        emit(WorkersStarted(workers=tuple(pool.infos.values())))
        emit(RunStarted(images=len(positions), skipped=res.skipped, differences=tuple(res.differences)))
        RayDriver(
            pool, plan, positions, options, emit, res, st, chunk_size, load_seconds or {}, on_image
        ).run()
    except KeyboardInterrupt:
        res.interrupted = True
    finally:
        pool.kill_all()
        try:
            marker.unlink()
        except OSError:
            pass
        if started:
            ray.shutdown()
        res.wall_seconds = time.perf_counter() - t0
    emit(RunEnded(interrupted=res.interrupted))
    return res


@dataclass(frozen=True)
class RayEngine:
    """The Ray engine as an :class:`~catimg.generation.execution.Engine` (``--engine ray``):
    :func:`run_plan_ray` with the cluster options fixed (``address``, ``workers``, ``device``: the CLI's;
    ``load_seconds``: predicted load time per model for the scheduler)."""

    address: str | None = None
    workers: int | None = None
    device: str | None = None
    load_seconds: dict[str, float] | None = field(default=None, hash=False)

    def run(
        self,
        plan: Sequence[PlanItem],
        options: RunOptions,
        on_event: OnEvent | None = None,
        on_image: OnImage | None = None,
    ) -> RunResult:
        return run_plan_ray(
            list(plan),
            options,
            on_event,
            on_image,
            address=self.address,
            workers=self.workers,
            device=self.device,
            load_seconds=self.load_seconds,
        )


def _start_workers(
    pool: WorkerPool,
    options: RunOptions,
    images: int,
    marker: str | None,
    *,
    workers: int | None,
    device: str | None,
    cpus_per_worker: float,
    threads: int | None,
) -> None:
    """Start the pool's actors: as many as the cluster (and ``--workers``) allows, no more than ``images``."""
    ray = pool.ray
    n, cpus_each, gpus_each = cluster_workers(ray.cluster_resources(), device, workers, cpus_per_worker)
    if workers is None:
        n = min(n, images)  # no more actors than images
    # each GPU actor sees only its own GPU (Ray sets CUDA_VISIBLE_DEVICES): cuda:N becomes cuda there
    worker_dev = (
        ("cuda" if device.startswith(("cuda", "gpu")) else device)
        if device is not None
        else (None if gpus_each else "cpu")
    )
    pool.remote = ray.remote(RayWorker).options(
        num_cpus=cpus_each, num_gpus=gpus_each, max_restarts=0, max_task_retries=0
    )
    n_threads = threads if threads is not None else (_local_threads() if not gpus_each else 1)
    pool.args = (worker_dev, options, _worker_env(), marker, n_threads)
    pool.start(n)


def _check_output(pool: WorkerPool, out: Path, shared_output: bool | None) -> None:
    """InputError when a worker sees the output folder but cannot write it, or must share it and does not."""
    for info in pool.infos.values():
        if info.write_error is not None:
            raise InputError(
                f"--out {out}: worker {info.label} on {info.host} sees the folder but cannot write it "
                f"({info.write_error}); fix its permissions on every node or pick another --out"
            )
        if shared_output and not info.shared:
            raise InputError(
                f"--out {out}: worker {info.label} on {info.host} cannot see this folder; "
                "use a path every node reaches, or leave shared output to detection"
            )


class RayDriver:
    """Hands a plan's batches to the pool's actors and records what comes back, as it arrives.

    Chunks of whole batches (the local engine's batches, so the same pixels) go to actors through
    :class:`CostScheduler`; one batch is kept queued at each actor. Its state is its fields: the plan (an item
    may be re-planned), the scheduler, the model each actor holds, the batches in flight, the idle actors, the
    models that failed to load and the plan positions recorded (each exactly once, by the one
    :class:`Recorder`).
    """

    def __init__(
        self,
        pool: WorkerPool,
        plan: list[PlanItem],
        positions: list[int],
        options: RunOptions,
        emit: OnEvent,
        res: RunResult,
        stats: RayRun,
        chunk_size: int | None,
        load_seconds: dict[str, float],
        on_image: OnImage | None = None,
    ) -> None:
        self.ray = pool.ray
        self.pool = pool
        self.plan = list(plan)  # items may be re-planned (replace) below; the caller's list is left alone
        self.positions = positions
        self.options = options
        self.emit = emit
        self.res = res
        self.stats = stats
        self.chunk_size = chunk_size
        self.load_seconds = load_seconds
        self.recorder = Recorder(options, emit, res, on_image)
        self.batch_device = pool.infos[min(pool.infos)].device  # batch sizes by the first worker's device
        self.next_chunk = 0
        work, chunks = self._work(positions)
        stats.chunks = len(chunks)
        self.sched = CostScheduler(work, len(pool.actors), chunks)
        self.held: dict[int, str | None] = dict.fromkeys(pool.actors)  # actor -> model it holds
        self.pending: dict[Any, tuple[int, list[int]]] = {}  # ref -> (actor, plan positions)
        self.idle: set[int] = set()
        self.failed_models: dict[str, str] = {}  # model -> why it did not load
        self.recorded: set[int] = set()
        self.replan_note: dict[int, str] = {}
        self.replacements = len(pool.actors)

    def run(self) -> None:
        for i in sorted(self.pool.actors):
            self._dispatch(i)
        while self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1)
            i, batch = self.pending.pop(ready[0])
            try:
                reply: BatchReply = self.ray.get(ready[0])
            except self.ray.exceptions.RayActorError as exc:
                self._worker_lost(i, batch, exc)
                continue
            except self.ray.exceptions.RayTaskError as exc:  # an unexpected error in the worker
                self._batch_failed(i, batch, exc)
                continue
            if reply.load_error is not None:
                self._load_failed(i, batch, reply.model, reply.load_error)
                continue
            self._record(i, reply)
            if i in self.pool.actors and self._inflight(i) <= 1 and i not in self.idle:
                self._dispatch(i)  # keep one batch queued at the actor so that it never waits for the driver
        left = [p for p in self.positions if p not in self.recorded]
        if left:
            raise GenerationError(
                f"{len(left)} image(s) could not be scheduled on the Ray cluster; rerun with --resume"
            )

    # ------------------------------------------------------------------------------------------ work
    def _batch_size(self, p: int) -> int:
        return batch_size(self.options, self.batch_device, self.plan[p])

    def _work(self, positions: list[int]) -> tuple[list[Work], list[Chunk]]:
        """Work per generator (grouped as the local engine groups) and its chunks of whole batches."""
        work: list[Work] = []
        chunks: list[Chunk] = []
        for gen, ps in group_plan(self.plan, positions):
            secs = float(self.plan[ps[0]].predicted_seconds or 1.0)
            w = Work(gen.name, gen.model, len(ps), secs, float(self.load_seconds.get(gen.model, 0.0)))
            work.append(w)
            bs = self._batch_size(ps[0])
            size = self.chunk_size if self.chunk_size is not None else 2 * bs
            size = max(bs, (size // bs) * bs)  # whole batches: the same batches as the local engine
            for c in make_chunks([w], size, items={w.generator: ps}, total=len(self.plan)):
                chunks.append(replace(c, id=self.next_chunk))
                self.next_chunk += 1
        return work, chunks

    def _inflight(self, i: int) -> int:
        return sum(1 for a, _ in self.pending.values() if a == i)

    def _dispatch(self, i: int) -> None:
        c = self.sched.next(i, self.held[i])
        while c is not None and c.model in self.failed_models:
            c = self.sched.next(i, None)
        if c is None:
            self.idle.add(i)
            return
        self.idle.discard(i)
        ps = [p for p in c.items if p not in self.recorded]
        if not ps:
            self._dispatch(i)
            return
        if self.held[i] != c.model:
            g = self.plan[ps[0]].generator
            self.emit(ModelLoading(model=g.model, source=g.source, worker=self.pool.infos[i].label))
            self.held[i] = c.model
        for b in batches(ps, self._batch_size(ps[0])):
            ref = self.pool.actors[i].run.remote([Job(p, self.plan[p]) for p in b])
            self.pending[ref] = (i, b)

    def _wake(self) -> None:
        for j in sorted(self.idle):
            if j in self.pool.actors and self.sched.pending:
                self._dispatch(j)

    def _requeue(self, positions: list[int]) -> None:
        ps = [p for p in positions if p not in self.recorded]
        if not ps:
            return
        self.sched.requeue(self._work(ps)[1])
        self.stats.requeued += len(ps)

    # ---------------------------------------------------------------------------------------- faults
    def _worker_lost(self, i: int, batch: list[int], exc: BaseException) -> None:
        """The actor died: its unfinished images go back to the queue, a fresh actor takes its place."""
        lost = list(batch)
        for r in [r for r, (a, _) in self.pending.items() if a == i]:
            lost.extend(self.pending.pop(r)[1])
        self.pool.remove(i)
        self.sched.retire(i)
        self.stats.lost_workers += 1
        self.emit(
            WorkerLost(
                worker=self.pool.infos[i].label,
                images=len(lost),
                error=first_line(exc, typed=True, limit=200),
            )
        )
        self._requeue(lost)
        if self.replacements > 0:
            self.replacements -= 1
            j = self.pool.start(1)[0]
            self.held[j] = None
            self.stats.workers.append(self.pool.infos[j].summary())
            self._dispatch(j)
        elif not self.pool.actors:
            raise GenerationError(
                "every Ray worker died; rerun with --resume to finish the images not recorded"
            ) from None
        self._wake()

    def _batch_failed(self, i: int, batch: list[int], exc: BaseException) -> None:
        """An unexpected error in the worker (not in an image): the batch's images are recorded as failed."""
        for p in batch:
            if p not in self.recorded:
                self._write_failed(
                    p, first_line(exc, typed=True, limit=200), "the Ray worker failed on this batch", i
                )
        if i in self.pool.actors and self._inflight(i) == 0:
            self._dispatch(i)

    def _load_failed(self, i: int, batch: list[int], model: str, reason: str) -> None:
        """``model`` did not load on actor ``i``: it leaves the run and its images are re-planned."""
        self.held[i] = None
        ps = list(batch)
        if model not in self.failed_models:
            self.failed_models[model] = reason
            self.stats.replanned[model] = reason
            ps += [q for c in self.sched.drop_model(model) for q in c.items]
            self.emit(Replanned(model=model, reason=reason))
        moved: list[int] = []
        for p in ps:
            if p in self.recorded:
                continue
            it = self.plan[p]
            fb = [g for g in it.fallbacks if g.model not in self.failed_models]
            if fb:
                self.plan[p] = replace(it, generator=fb[0], fallbacks=tuple(fb[1:]))
                self.replan_note[p] = (
                    f"re-planned from {it.generator.name} (failed to load on a Ray worker) to {fb[0].name}"
                )
                moved.append(p)
            else:
                self._write_failed(
                    p,
                    f"generator {it.generator.name} could not load ({reason}); no other generator "
                    "allowed for this prompt",
                    "re-planned: its generator failed to load",
                    i,
                )
        self._requeue(moved)
        self.stats.requeued -= len(moved)
        if self._inflight(i) == 0:
            self._dispatch(i)
        self._wake()

    # --------------------------------------------------------------------------------------- records
    def _write_failed(self, p: int, error: str, note: str, i: int) -> None:
        """Record position ``p`` as failed without an attempt, on actor ``i``'s device."""
        it = self.plan[p]
        info = self.pool.infos[i]
        rec = describe(
            it,
            it.generator,
            self.options,
            info.device,
            scheduler=it.generator.scheduler,
            seconds=0.0,
            status="failed",
            attempts=1,
            note=note,
            error=error,
        )
        self.recorder.record(it, Outcome(Job(p, it), it.generator, rec, 0.0), worker=info.label)
        self.recorded.add(p)

    def _record(self, i: int, reply: BatchReply) -> None:
        for m in reply.loads:
            self.res.loads.append(m)
            self.res.load_seconds[m] = self.res.load_seconds.get(m, 0.0) + reply.load_seconds.get(m, 0.0)
        for made in reply.images:
            p = made.outcome.job.position
            if p in self.recorded:  # a result that arrived twice (never expected): keep the first
                continue
            note = made.outcome.record.note
            if p in self.replan_note:
                note = f"{self.replan_note[p]}; {note}" if note else self.replan_note[p]
            self.recorder.record(
                self.plan[p],
                made.outcome,
                png=made.png,
                file=made.file,
                worker=self.pool.infos[i].label,
                note=note,
            )
            self.recorded.add(p)
