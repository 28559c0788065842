"""Absorb jobs started over HTTP: a queue worked by one background thread on the served base
model, each job's status, stage and progress as the server reports them, and cancelling.

A cancel stops the running job at once, wherever it is (a stage may run long between progress
updates: preparing a million QA requests had none): the worker thread gets `JobCancelled`
raised in it, and the absorb unwinds as after Ctrl-C, keeping nothing partial. A cancel that
comes while the adapter is being saved removes it once saved.
"""

from __future__ import annotations

import ctypes
import gc
import queue
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

import mlx.core as mx

from .. import library
from ..absorb import absorb
from ..errors import LiftError
from ..progress import Progress

MAX_QUEUED_JOBS = 16
KEPT_JOBS = 100  # finished absorb jobs still reported by GET /v1/documents/ID
CANCEL_WAIT_S = 5.0  # longest a DELETE waits for the job it cancels to stop


class QueueFull(Exception):
    """Too many jobs are waiting already; the message says to try again later."""


class JobCancelled(BaseException):
    """Raised in the worker thread to stop its job; a BaseException, as KeyboardInterrupt is,
    so that no `except Exception` on the way swallows it."""


@dataclass
class Job:
    """An absorb started over HTTP."""

    id: str
    source: str
    name: str | None
    document: object = field(repr=False)
    preset: str = "default"
    overrides: dict = field(default_factory=dict, repr=False)
    status: str = "queued"  # queued, running, ready, failed, cancelled
    stage: str = "queued"
    done: int = 0
    total: int = 0
    note: str = ""
    model: str | None = None
    error: str | None = None
    reused: bool = False
    created: float = field(default_factory=time.time)
    finished: float | None = None
    cancelled: bool = False

    def to_json(self) -> dict:
        return {"id": self.id, "object": "document.absorb", "status": self.status,
                "stage": self.stage, "progress": {"done": self.done, "total": self.total},
                "source": self.source, "model": self.model, "reused": self.reused,
                "note": self.note, "error": self.error, "created": int(self.created),
                "finished": None if self.finished is None else int(self.finished)}


class _JobProgress(Progress):
    """Progress that a job's status reports, and the place where a cancel takes effect."""

    def __init__(self, job: Job):
        super().__init__(quiet=True)
        self.job = job

    def log(self, message: str) -> None:
        self.job.note = message

    def warn(self, message: str) -> None:
        self.job.note = f"warning: {message}"

    @contextmanager
    def bar(self, label: str, total: int, unit: str = "tok"):
        job = self.job
        job.stage, job.done, job.total = label, 0, total

        def update(done: int, units: int = 0, note: str = "", total: int | None = None) -> None:
            if job.cancelled:
                raise JobCancelled
            job.done = done
            if total is not None:
                job.total = total

        yield update
        job.stage = "saving" if label == "train" else job.stage


class Absorber:
    """Absorb jobs, one at a time in a background thread, on the server's base model."""

    def __init__(self, lm, log):
        self.lm, self.log = lm, log
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()  # handler threads add and read jobs at once
        self._running: Job | None = None  # the job inside absorb(), which a cancel may stop
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="lift-absorb", daemon=True)
        self._thread.start()

    def submit(self, request) -> Job:
        """Queue the absorb an AbsorbRequest asks for (QueueFull when MAX_QUEUED_JOBS
        already wait)."""
        with self._lock:
            if sum(j.status == "queued" for j in self._jobs.values()) >= MAX_QUEUED_JOBS:
                raise QueueFull(f"{MAX_QUEUED_JOBS} absorb jobs are already waiting; try "
                                "again when one is done")
            job = Job(f"absorb-{uuid.uuid4().hex[:16]}", request.document.source, request.name,
                      request.document, request.preset, request.overrides)
            self._jobs[job.id] = job
            finished = [j for j in self._jobs.values() if j.finished is not None]
            for old in finished[:max(0, len(finished) - KEPT_JOBS)]:
                del self._jobs[old.id]
        self._queue.put(job)
        return job

    def jobs(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def get(self, ident: str) -> Job | None:
        with self._lock:
            return self._jobs.get(ident)

    def cancel(self, job: Job) -> None:
        with self._lock:
            job.cancelled = True
            if job.status == "queued":
                job.status, job.stage, job.finished = "cancelled", "cancelled", time.time()
            elif self._running is job and job.stage != "saving":
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self._thread.ident), ctypes.py_object(JobCancelled))
        deadline = time.monotonic() + CANCEL_WAIT_S
        while job.status == "running" and time.monotonic() < deadline:
            time.sleep(0.01)  # so that the answer to DELETE says it stopped

    def stop(self, wait: float = 10.0) -> None:
        for job in self.jobs():
            if job.finished is None:
                self.cancel(job)
        self._queue.put(None)
        self._thread.join(wait)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if not job.cancelled:
                self._run(job)

    def _run(self, job: Job) -> None:
        job.status, job.stage = "running", "preparing"
        absorbed = None
        try:
            with self._lock:
                self._running = job
            try:
                # as `lift-mlx absorb` does: the preset and overrides over the model's settings
                absorbed = absorb(job.document, self.lm, preset_name=job.preset,
                                  progress=_JobProgress(job), **job.overrides)
            finally:
                with self._lock:
                    self._running = None
            key = absorbed.adapter_path.name
            job.reused = absorbed.report.reused
            if job.cancelled:  # while saving: too late to stop, not too late to remove
                raise JobCancelled
            if job.name:
                try:
                    library.rename(key, job.name)
                except LiftError as e:  # taken meanwhile: the document keeps its own name
                    job.note = f"not renamed: {e}"
            job.model = library.find(key).name
            job.status, job.stage = "ready", "done"
        except JobCancelled:
            if absorbed is not None and not absorbed.report.reused:  # stored all the same
                library.remove(absorbed.adapter_path.name)
            job.status, job.stage = "cancelled", "cancelled"
        except LiftError as e:
            job.status, job.error = "failed", str(e)
        except Exception as e:  # a bug: the job fails, the server goes on
            job.status, job.error = "failed", f"internal error ({type(e).__name__}: {e})"
            self.log(traceback.format_exc())
        finally:
            job.finished = time.time()
            job.document = None  # the text is in the store now, or not wanted
            if job.status == "cancelled":  # what the stopped absorb held goes now
                gc.collect()
                mx.clear_cache()
