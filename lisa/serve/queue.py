"""A bounded queue in front of the model and the one thread that runs it.

The event loop never touches the model: requests become ``Job``s, a single worker thread takes up to
``max_batch`` of them per turn and answers them through their asyncio futures. "Batching" here means
the jobs of one turn are grouped by image and run back to back under ``pipe.lock``, so each distinct
image is encoded (CLIP + SAM image encoder) once per turn; the language model still decodes one
request at a time, so the answers are exactly those of single requests.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..inference.cache import image_key

log = logging.getLogger("lisa.serve")


class QueueFull(Exception):
    pass


@dataclass
class Job:
    image: np.ndarray
    prompt: str
    history: list[tuple[str, str]] | None
    max_new_tokens: int | None
    request_id: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    key: str = ""


@dataclass
class JobResult:
    result: object  # LisaResult
    queue_wait: float
    batch_size: int
    batch_index: int


def _deliver(future: asyncio.Future, value=None, error: BaseException | None = None) -> None:
    if future.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class ModelWorker:
    def __init__(self, pipe, max_queue: int = 16, max_batch: int = 4):
        if max_queue < 1 or max_batch < 1:
            raise ValueError(f"max_queue and max_batch must be >= 1 (got {max_queue}, {max_batch})")
        self.pipe = pipe
        self.max_queue, self.max_batch = max_queue, max_batch
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.served = 0
        self.failed = 0
        self.turns = 0
        self.largest_batch = 0
        self.seconds_per_request = 0.0  # moving average of the model time, for Retry-After

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lisa-model-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._thread.join(timeout)
            self._thread = None

    async def run(self, image: np.ndarray, prompt: str, history=None, max_new_tokens: int | None = None,
                  request_id: str = "") -> JobResult:
        """Queue one request and wait for its answer; raises ``QueueFull`` at once when the queue is full."""
        loop = asyncio.get_running_loop()
        job = Job(image, prompt, history, max_new_tokens, request_id, loop, loop.create_future())
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"the request queue is full ({self.max_queue} waiting)") from None
        return await job.future

    def _take_turn(self) -> list[Job]:
        first = self._queue.get()
        if first is None:
            return []
        jobs = [first]
        while len(jobs) < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._stop.set()
                break
            jobs.append(job)
        return jobs

    def _run(self) -> None:
        while not self._stop.is_set():
            jobs = self._take_turn()
            if not jobs:
                continue
            self.turns += 1
            self.largest_batch = max(self.largest_batch, len(jobs))
            for job in jobs:
                job.key = image_key(job.image)
            # Same-image jobs run next to each other (stable: arrival order otherwise kept).
            first_seen = {}
            for i, job in enumerate(jobs):
                first_seen.setdefault(job.key, i)
            ordered = sorted(jobs, key=lambda j: first_seen[j.key])
            with self.pipe.lock:
                for index, job in enumerate(ordered):
                    self._run_one(job, index, len(ordered))

    def _run_one(self, job: Job, index: int, size: int) -> None:
        if job.future.done():
            return
        started = time.perf_counter()
        try:
            result = self.pipe(job.image, job.prompt, history=job.history, max_new_tokens=job.max_new_tokens,
                               key=job.key)
        except Exception as e:  # noqa: BLE001 - any failure goes to its request; the worker lives on
            self.failed += 1
            log.error("request %s failed in the model", job.request_id, exc_info=True)
            self._post(job, None, e)
            return
        self.served += 1
        took = time.perf_counter() - started
        self.seconds_per_request = took if self.served == 1 else 0.8 * self.seconds_per_request + 0.2 * took
        self._post(job, JobResult(result, started - job.enqueued, size, index), None)

    @staticmethod
    def _post(job: Job, value, error) -> None:
        try:
            job.loop.call_soon_threadsafe(_deliver, job.future, value, error)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            pass
