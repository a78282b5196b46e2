"""``lisa serve``: an HTTP API for LISA and LLaVA models (FastAPI; one process, or Ray Serve replicas).

Endpoints
  ``POST /v1/segment?mask_format=rle|png``  multipart (``image`` file, ``prompt``, optional
      ``max_new_tokens``) or JSON ``{"image": <base64>, "prompt": ..., "max_new_tokens": ...}``.
      Answer: ``text``, ``masks`` (one per ``[SEG]``: ``area``, ``bbox`` [x, y, w, h] and a COCO RLE
      ``{"size", "counts"}`` or a base64 PNG), ``image_size``, ``cache_hit``, ``timings`` (seconds),
      ``batch`` and ``request_id``.
  ``POST /v1/chat``  the same with ``messages`` (user/assistant turns ending with a user turn) instead
      of ``prompt``; only the masks of the answered turn are returned.
  ``GET /health``, ``GET /v1/model`` (what is loaded, limits, cache and batching counters),
  ``GET /openapi.json``. Both POST routes take a ``model`` field (``GET /v1/models`` lists the
  names) and ``?stream=true`` (server-sent events: text pieces, then the answer).
  ``POST /v1/chat/completions``: OpenAI-compatible (``openai_api``); LLaVA's controller and worker
  routes (``llava_protocol``).

Errors are ``{"error": {"code", "message", "request_id"}}``: 400 undecodable image/JSON/multipart,
401 API key (checked before the body is read), 408 a body that stalls (``--body_timeout``), 413 body
or pixel count over the limit, 415 media type, 422 invalid fields (empty or over-long prompt or
message, lone surrogates, ``max_new_tokens`` over the server's, a conversation over the model's
context), 503 + ``Retry-After`` when the queue is full, 500 for a model failure (logged with its
traceback on the server, never sent to the client; the connection stays usable). At most
``--max_masks`` masks per answer (``masks_dropped`` counts the rest).

Concurrency: one worker thread owns each model and is the only one that decodes images (a waiting
request holds its compressed bytes, checked from the header). ``--max_queue`` requests may wait;
``--max_batch`` of them are taken per turn (after waiting up to ``--batch_wait_ms`` for more) and
decoded together, one forward pass per step for the batch; greedy answers are those of the requests
sent alone. ``--replicas`` / ``--address`` run the same app on Ray Serve (``cluster``; docs/serving.md).

Security: with ``--api_key`` (or ``$LISA_API_KEY``) every route but ``/health`` and the API
description needs ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (checked from the headers,
before the body is read); without a key only loopback hosts are allowed
unless ``--allow_remote`` is given.
"""
