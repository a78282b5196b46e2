"""Several requests answered by one batched generation (``lisa serve --max_batch``).

Each request is prepared as it would be alone (prompt, image encoding from the cache, token
budget), the language model decodes them together (:func:`generate_batch`, through the pipeline's
static-cache rows when it has them), then each gets its own masks and text. A request that fails to
prepare (a prompt too long for the context) gets its error and the others go on; when the batched
generation itself fails (out of memory with a large batch), the requests are retried one at a time,
so one failure is reported where it belongs.
"""

from __future__ import annotations

import logging

from ..model.batch_generation import BatchItem, generate_batch
from .pipeline import LisaResult
from .request import GenerationRequest

log = logging.getLogger("lisa.inference")


def run_batch(pipe, requests: list[GenerationRequest]) -> list[LisaResult | Exception]:
    """One result or exception per request, in order. One request runs the pipeline's own path."""
    if len(requests) == 1:
        return [_run_alone(pipe, requests[0])]
    results: list[LisaResult | Exception | None] = [None] * len(requests)
    with pipe.lock:
        prepared = []
        for i, request in enumerate(requests):
            try:
                prepared.append((i, pipe.prepare(request)))
            except Exception as e:  # noqa: BLE001 - belongs to this request only
                results[i] = e
        items = [BatchItem(p.ids, p.encoding.clip_feats, p.budget, requests[i].sampling.picker(), p.stream)
                 for i, p in prepared]
        try:
            generated = generate_batch(pipe.model, items, eos_token_id=pipe.tokenizer.eos_token_id, fast=pipe.fast)
        except Exception as e:  # noqa: BLE001 - retried one by one below, where each error finds its request
            log.warning("batched generation of %d requests failed; answering them one at a time", len(items),
                        exc_info=True)
            generated, failure = None, e
        for k, (i, prep) in enumerate(prepared):
            if generated is None:
                # a request that already streamed text cannot start again without repeating it
                streamed = prep.stream is not None and prep.stream.sent
                results[i] = failure if streamed else _run_alone(pipe, requests[i])
                continue
            try:
                results[i] = pipe.finish(prep, generated[k])
            except Exception as e:  # noqa: BLE001
                results[i] = e
    return results


def _run_alone(pipe, request: GenerationRequest) -> LisaResult | Exception:
    try:
        return pipe.run(request)
    except Exception as e:  # noqa: BLE001 - handed to the caller with its request
        return e
