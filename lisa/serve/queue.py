"""A bounded queue in front of the model and the one thread that runs it.

The event loop never touches the model: requests become ``Job``s, a single worker thread takes up to
``max_batch`` of them per turn (waiting at most ``batch_wait_ms`` for more after the first) and
answers them through their asyncio futures. A turn of several jobs is decoded together, one batched
forward pass per step (``decode_together``, the default); without it the jobs are grouped by image
and run back to back. Either way each image is encoded (CLIP + SAM image encoder) once, and a turn of
one plain request runs the pipeline exactly as a lone request.

A request's image may still be encoded (:class:`lisa.images.EncodedImage`, header checked): the
pipeline decodes it when the request's turn comes, after its prompt was checked, and keeps only the
encoding. After a turn the worker drops the requests' images and hands freed memory back.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..inference.cache import image_key
from ..inference.request import GenerationRequest

log = logging.getLogger("lisa.serve")


class QueueFull(Exception):
    pass


@dataclass
class Job:
    request: GenerationRequest
    request_id: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    key: str = ""

    @property
    def plain(self) -> bool:
        """What the first API served: an instruction, greedy, no streaming (``pipe(...)`` answers it)."""
        r = self.request
        return r.prompt_text is None and r.sampling.greedy and not r.streams


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
    def __init__(self, pipe, max_queue: int = 16, max_batch: int = 4, batch_wait_ms: float = 0.0,
                 decode_together: bool = True):
        if max_queue < 1 or max_batch < 1 or batch_wait_ms < 0:
            raise ValueError(f"max_queue and max_batch must be >= 1 and batch_wait_ms >= 0 (got {max_queue}, "
                             f"{max_batch}, {batch_wait_ms})")
        self.pipe = pipe
        self.max_queue, self.max_batch = max_queue, max_batch
        # the batch graphs before the first request, not in it (a pipeline-like callable has none)
        if decode_together and hasattr(pipe, "warm_up_batches"):
            pipe.warm_up_batches(max_batch)
        self.batch_wait = batch_wait_ms / 1000.0
        self.decode_together = decode_together
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

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def run(self, image: np.ndarray | GenerationRequest, prompt: str | None = None, history=None,
                  max_new_tokens: int | None = None, request_id: str = "") -> JobResult:
        """Queue one request (a ``GenerationRequest``, or its image, prompt, history and budget) and wait
        for its answer; raises ``QueueFull`` at once when the queue is full. A request cancelled while
        it waits or streams (its client went away) stops at the next token."""
        loop = asyncio.get_running_loop()
        request = image if isinstance(image, GenerationRequest) else GenerationRequest(
            image, prompt, history, max_new_tokens=max_new_tokens)
        job = Job(request, request_id, loop, loop.create_future())
        if request.on_text is not None or request.stop:
            user_cancelled = request.cancelled
            request.cancelled = lambda: job.future.done() or bool(user_cancelled and user_cancelled())
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
        deadline = time.perf_counter() + self.batch_wait
        while len(jobs) < self.max_batch:
            try:
                wait = deadline - time.perf_counter()
                job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
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
            try:
                self._turn(jobs)
            finally:
                for job in jobs:  # the answers are out: nothing keeps an image of this turn alive
                    release = getattr(job.request.image, "release", None)
                    if release is not None:
                        release()
                    job.request.image = None
                del jobs
                release_memory()

    def _turn(self, jobs: list[Job]) -> None:
        self.turns += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        live = [job for job in jobs if not job.future.done()]
        if self.decode_together and (len(live) > 1 or (live and not live[0].plain)):
            self._run_together(live, len(jobs))
            return
        for job in jobs:
            image = job.request.image
            job.key = getattr(image, "key", None) or image_key(image)
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
        r = job.request
        try:
            if job.plain:
                result = self.pipe(r.image, r.prompt, history=r.history, max_new_tokens=r.max_new_tokens,
                                   key=job.key)
            else:
                r.key = job.key
                result = self.pipe.run(r)
        except Exception as e:  # noqa: BLE001 - any failure goes to its request; the worker lives on
            result = e
        self._settle(job, result, started, index, size, time.perf_counter() - started)

    def _run_together(self, jobs: list[Job], size: int) -> None:
        from ..inference.batching import run_batch

        started = time.perf_counter()
        results = run_batch(self.pipe, [job.request for job in jobs])
        took = (time.perf_counter() - started) / max(len(jobs), 1)
        for index, (job, result) in enumerate(zip(jobs, results)):
            self._settle(job, result, started, index, size, took)

    def _settle(self, job: Job, result, started: float, index: int, size: int, took: float) -> None:
        if isinstance(result, Exception):
            self.failed += 1
            if not isinstance(result, ValueError):  # ValueError: the request's own fault, answered as 4xx
                log.error("request %s failed in the model", job.request_id, exc_info=result)
            self._post(job, None, result)
            return
        self.served += 1
        self.seconds_per_request = took if self.served == 1 else 0.8 * self.seconds_per_request + 0.2 * took
        self._post(job, JobResult(result, started - job.enqueued, size, index), None)

    @staticmethod
    def _post(job: Job, value, error) -> None:
        try:
            job.loop.call_soon_threadsafe(_deliver, job.future, value, error)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            pass


def _load_malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_memory() -> None:
    """Hand freed memory back to the system after a turn: glibc keeps the freed buffers of a large
    image in its arenas otherwise, and the process would hold its peak until the next request."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
