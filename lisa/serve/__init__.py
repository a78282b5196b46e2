"""``lisa serve``: an HTTP API for one loaded LISA model (FastAPI + uvicorn).

Endpoints
  ``POST /v1/segment?mask_format=rle|png``  multipart (``image`` file, ``prompt``, optional
      ``max_new_tokens``) or JSON ``{"image": <base64>, "prompt": ..., "max_new_tokens": ...}``.
      Answer: ``text``, ``masks`` (one per ``[SEG]``: ``area``, ``bbox`` [x, y, w, h] and a COCO RLE
      ``{"size", "counts"}`` or a base64 PNG), ``image_size``, ``cache_hit``, ``timings`` (seconds),
      ``batch`` and ``request_id``.
  ``POST /v1/chat``  the same with ``messages`` (user/assistant turns ending with a user turn) instead
      of ``prompt``; only the masks of the answered turn are returned.
  ``GET /health``, ``GET /v1/model`` (what is loaded, limits, cache and batching counters),
  ``GET /openapi.json``.

Errors are ``{"error": {"code", "message", "request_id"}}``: 400 undecodable image/JSON/multipart,
401 API key, 413 body or pixel count over the limit, 415 media type, 422 invalid fields (empty or
over-long prompt, ``max_new_tokens`` over the server's), 503 + ``Retry-After`` when the queue is full,
500 for a model failure (logged with its traceback on the server, never sent to the client).

Concurrency: one worker thread owns the model. ``--max_queue`` requests may wait; ``--max_batch``
of them are taken per turn, grouped by image and run back to back, so an image is encoded once and
its SAM embedding reused (also across turns, through the pipeline's cache). The language model still
decodes one request at a time: batching saves image encodings and scheduling, not decoding steps,
and every answer equals the answer to the same request sent alone.

Security: with ``--api_key`` (or ``$LISA_API_KEY``) the ``/v1/*`` routes need
``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; without a key only loopback hosts are allowed
unless ``--allow_remote`` is given.
"""
