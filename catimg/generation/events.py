"""Progress events: what a run tells its caller while it works, as small frozen dataclasses.

Both engines (:func:`catimg.generation.generate.run_plan`, :func:`catimg.generation.ray_engine.run_plan_ray`,
built on :mod:`catimg.generation.execution`) and the calibration campaign
(:func:`catimg.calibration.calibrate.run_campaign`) call an :data:`OnEvent` callback with one :data:`Event` at
a time; the CLI renders them (``match``/``isinstance`` on the class). Events are for progress only: work on
each image made (scoring, the store) goes through the engines' ``on_image`` hook (:data:`OnImage`), not
through this callback. Nothing here imports torch or the engines.

Kinds, in the order a run sends them:

* :class:`WorkersStarted` (Ray only), :class:`RunStarted`, then per model :class:`ModelLoading`, per batch
  :class:`BatchStarted` and its :class:`Step` s, a :class:`Retrying` before the one retry of a failed image,
  :class:`ImageDone` for every image recorded (made or failed), :class:`Replanned` / :class:`WorkerLost` (Ray
  only), and :class:`RunEnded` last.
* Calibration adds :class:`ImageScored` (an image scored and stored) and :class:`ImageFailed` (an image not
  made).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from catimg.generation.execution import ImageRecord
    from catimg.generation.generate import PlanItem
    from catimg.generation.ray_engine import WorkerInfo


@dataclass(frozen=True)
class RunStarted:
    """The run's images are known: ``images`` to make, ``skipped`` already in the folder (``--resume``), and
    how this run differs from the manifest it resumes (``differences``)."""

    images: int
    skipped: int = 0
    differences: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunEnded:
    """The run stopped: all done, or ``interrupted`` (Ctrl-C)."""

    interrupted: bool


@dataclass(frozen=True)
class ModelLoading:
    """A pipeline starts loading (``worker``: the Ray worker's label; None in this process)."""

    model: str
    source: str
    worker: str | None = None


@dataclass(frozen=True)
class BatchStarted:
    """A batch of ``images`` of ``generator`` goes to the pipeline."""

    generator: str
    images: int


@dataclass(frozen=True)
class Step:
    """A denoising step of a batch finished (``step`` of ``steps``) for ``prompts``."""

    generator: str
    step: int
    steps: int
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class Retrying:
    """An image failed (``error``) and is retried once."""

    item: PlanItem
    generator: str
    error: str


@dataclass(frozen=True)
class ImageDone:
    """An image was recorded (its PNG, its manifest line): made, retried, fallback or failed."""

    record: ImageRecord


@dataclass(frozen=True)
class WorkersStarted:
    """The Ray workers that will make the images."""

    workers: tuple[WorkerInfo, ...]


@dataclass(frozen=True)
class Replanned:
    """``model`` failed to load on a Ray worker; its images go to the next cheaper generator allowed."""

    model: str
    reason: str


@dataclass(frozen=True)
class WorkerLost:
    """A Ray worker died; its ``images`` unfinished images were re-queued."""

    worker: str
    images: int
    error: str


@dataclass(frozen=True)
class ImageScored:
    """Calibration: an image made, scored (``score``) and recorded in the store."""

    generator: str
    prompt: str
    seed: int
    score: float
    seconds: float
    file: Path


@dataclass(frozen=True)
class ImageFailed:
    """Calibration: an image that could not be made (nothing stored)."""

    generator: str
    prompt: str
    seed: int
    error: str | None


#: Any progress event.
Event: TypeAlias = (
    RunStarted
    | RunEnded
    | ModelLoading
    | BatchStarted
    | Step
    | Retrying
    | ImageDone
    | WorkersStarted
    | Replanned
    | WorkerLost
    | ImageScored
    | ImageFailed
)
#: The progress callback both engines and the calibration campaign take.
OnEvent: TypeAlias = Callable[[Event], None]
#: The engines' per-image hook: called with each image's record once it is recorded (after its ImageDone
#: event).
OnImage: TypeAlias = Callable[["ImageRecord"], None]


def no_events(event: Event) -> None:
    """An :data:`OnEvent` callback that ignores everything."""
