"""A served model as the HTTP app sees it: ``generate`` / ``stream`` / ``info`` / ``health``.

``LocalBackend`` runs a pipeline in this process behind its ``ModelWorker`` (the one-process server,
and the body of every Ray Serve replica); ``lisa.serve.remote.RayBackend`` reaches the replicas of a
Ray Serve deployment with the same methods. What crosses between them is plain data: a
``GenerationRequest`` without callbacks in, an ``Answer`` (text, boolean masks, counters) out, and a
``ModelError`` whose ``kind`` says what went wrong (never a traceback).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field

import numpy as np

from ..images import ImageError, ImageTooLarge
from ..inference.limits import PromptError
from ..inference.request import GenerationRequest
from .queue import ModelWorker, QueueFull

log = logging.getLogger("lisa.serve")


class ModelError(Exception):
    """``kind``: ``invalid_prompt`` (the request does not fit the model), ``invalid_image`` /
    ``image_too_large`` (its image failed to decode when its turn came), ``out_of_memory``,
    ``unavailable`` (no replica could take it) or ``model_error``; ``message`` is safe to show."""

    def __init__(self, kind: str, message: str):
        super().__init__(kind, message)
        self.kind, self.message = kind, message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and ("out of memory" in text or "can't allocate" in text)


def classify(exc: BaseException) -> BaseException:
    """The exception a client may learn about: ``QueueFull`` as is, anything else a ``ModelError``."""
    if isinstance(exc, (QueueFull, ModelError)):
        return exc
    if isinstance(exc, MemoryError) or is_out_of_memory(exc):
        return ModelError("out_of_memory", "the model ran out of memory on this request; retry later, or send a "
                                           "smaller image, a shorter conversation or a lower max_new_tokens")
    if isinstance(exc, ImageError):  # the request's own image, decoded by the worker
        return ModelError("image_too_large" if isinstance(exc, ImageTooLarge) else "invalid_image", str(exc))
    if isinstance(exc, PromptError):  # the pipeline's own input checks
        return ModelError("invalid_prompt", str(exc))
    return ModelError("model_error", "the model failed on this request")


@dataclass
class Answer:
    text: str
    masks: list[np.ndarray]  # bool [H, W], one per [SEG] of this turn
    finish_reason: str
    prompt_tokens: int
    tokens: int
    timings: dict
    cache_hit: bool
    queue_wait: float
    batch_size: int
    batch_index: int
    model: str = ""
    replica: str = ""  # which Ray Serve replica answered ("" in one process)
    extra: dict = field(default_factory=dict)
    masks_dropped: int = 0  # [SEG]s beyond the model's max_masks, without a mask


class LocalBackend:
    def __init__(self, name: str, pipe, settings, replica: str = "", max_queue: int | None = None):
        self.name, self.pipe, self.settings, self.replica = name, pipe, settings, replica
        self.worker = ModelWorker(pipe, max_queue or settings.max_queue, settings.max_batch,
                                  settings.batch_wait_ms, settings.decode_together)

    def start(self) -> None:
        self.worker.start()

    def stop(self) -> None:
        self.worker.stop()

    def _answer(self, job) -> Answer:
        r = job.result
        return Answer(r.text, r.masks, getattr(r, "finish_reason", "stop"), getattr(r, "prompt_tokens", 0),
                      int(r.timings.get("tokens", len(r.output_ids))), r.timings, r.cache_hit, job.queue_wait,
                      job.batch_size, job.batch_index, self.name, self.replica,
                      masks_dropped=int(getattr(r, "masks_dropped", 0)))

    async def generate(self, request: GenerationRequest, request_id: str = "") -> Answer:
        try:
            job = await self.worker.run(request, request_id=request_id)
        except Exception as e:  # noqa: BLE001 - logged by the worker; the client gets its kind
            raise classify(e) from None
        return self._answer(job)

    async def stream(self, request: GenerationRequest, request_id: str = "") -> AsyncIterator[dict]:
        """``{"text": piece}`` as the answer grows, then ``{"answer": Answer}``."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()
        request.on_text = lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece)
        task = asyncio.ensure_future(self.generate(request, request_id))
        # runs after every piece the worker posted before it delivered the result (one FIFO of callbacks)
        task.add_done_callback(lambda _: pieces.put_nowait(None))
        try:
            while (piece := await pieces.get()) is not None:
                yield {"text": piece}
            yield {"answer": task.result()}
        finally:
            if not task.done():  # the client went away: the worker stops this request at its next token
                task.cancel()

    def describe(self) -> dict:
        return {**describe_model(self.pipe, self.settings, self.worker), "name": self.name,
                "replica": self.replica, "pid": os.getpid()}

    async def info(self) -> dict:
        return self.describe()

    def stats(self) -> dict:
        w = self.worker
        return {"status": "ok" if w.alive else "stopped", "queue_depth": w.depth, "max_queue": w.max_queue,
                "served": w.served, "failed": w.failed}

    async def health(self) -> dict:
        return self.stats()


def describe_model(pipe, settings, worker: ModelWorker) -> dict:
    model = pipe.model
    cfg = model.config
    llm_cfg = model.llm.config
    weight = model.llm.get_input_embeddings().weight
    quant = getattr(model, "quantization", None) or getattr(llm_cfg, "quantization_config", None)
    if quant is not None and not isinstance(quant, str):
        quant = getattr(quant, "quant_method", None) or type(quant).__name__
    return {
        "version": settings.version,
        "llm": {k: getattr(llm_cfg, k, None) for k in ("model_type", "hidden_size", "num_hidden_layers",
                                                        "vocab_size", "max_position_embeddings")},
        "has_seg_head": bool(cfg.has_seg_head),
        "clip_image_size": int(cfg.clip_image_size), "sam_image_size": int(cfg.sam_image_size),
        "dtype": str(weight.dtype).replace("torch.", ""), "device": str(weight.device),
        "quantization": None if quant is None else str(quant),
        "conv_type": pipe.conv_type, "max_new_tokens": settings.max_new_tokens,
        "limits": {**{k: v for k, v in asdict(settings).items()
                      if k in ("max_body_bytes", "max_pixels", "max_prompt_chars", "max_new_tokens")},
                   "max_masks": getattr(pipe, "max_masks", None),
                   "max_position_embeddings": getattr(llm_cfg, "max_position_embeddings", None)},
        "batching": {"max_queue": worker.max_queue, "max_batch": worker.max_batch, "turns": worker.turns,
                     "largest_batch": worker.largest_batch, "batch_wait_ms": worker.batch_wait * 1000,
                     "decode_together": worker.decode_together},
        "cache": {"size": len(pipe.cache), "max_items": pipe.cache.max_items, "hits": pipe.cache.hits,
                  "misses": pipe.cache.misses},
    }
