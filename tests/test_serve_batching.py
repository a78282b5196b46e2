"""Batched decoding equals one-at-a-time decoding; streamed text adds up to the answer; stop strings and
sampling (tiny model, in process)."""

import asyncio

import numpy as np
import pytest
import torch

from lisa.inference.batching import run_batch
from lisa.inference.request import GenerationRequest, Sampling
from lisa.model.batch_generation import BatchItem, generate_batch
from lisa.model.generation import generate
from lisa.serve.queue import ModelWorker

PROMPTS = ["Segment the red box [SEG].", "What is in the picture? Please answer in a few words.", "hi",
           "Can you segment the dog in this image, and explain why? [SEG] [SEG]"]


@pytest.fixture(scope="module")
def pipe(seg_ckpt):
    from lisa.inference.pipeline import LisaPipeline

    return LisaPipeline.from_pretrained(seg_ckpt, device="cpu", max_new_tokens=16, progress=False)


def _images(n):
    rng = np.random.default_rng(5)
    return [rng.integers(0, 255, size=(40 + 6 * i, 56, 3), dtype=np.uint8) for i in range(n)]


def test_generate_batch_matches_generate_row_by_row(pipe):
    model, tok = pipe.model, pipe.tokenizer
    from lisa.tokenization import tokenizer_image_token

    items, alone = [], []
    for i, (img, text) in enumerate(zip(_images(4), PROMPTS)):
        enc, _ = pipe.encode_image(img)
        ids = tokenizer_image_token(pipe.build_prompt(text), tok)
        budget = [16, 5, 11, 3][i]  # rows leave the batch at different steps
        items.append(BatchItem(ids, enc.clip_feats, budget))
        alone.append(generate(model, torch.tensor([ids]), enc.clip_feats, budget, eos_token_id=tok.eos_token_id))
    assert len({len(it.input_ids) for it in items}) == 4  # prompts of different lengths
    batched = generate_batch(model, items, eos_token_id=tok.eos_token_id)
    for one, many in zip(alone, batched):
        assert many.new_ids == one.new_ids
        assert many.seg_hidden.shape == one.seg_hidden.shape
        torch.testing.assert_close(many.seg_hidden, one.seg_hidden, rtol=1e-4, atol=1e-5)
    assert [len(g.new_ids) for g in batched] == [16, 5, 11, 3]


@pytest.mark.parametrize("same_length", [False, True])
def test_batched_layer_step_is_bit_identical_to_the_decoder_forward(pipe, same_length):
    """The batched one-token step through the layers directly (no per-call mask or rotary building)
    against the decoder's forward: same ids and the same [SEG] states, bit for bit, with left padding
    (a boolean mask) and without (no mask)."""
    from lisa.tokenization import tokenizer_image_token

    model, tok = pipe.model, pipe.tokenizer
    items = []
    for i, (img, text) in enumerate(zip(_images(4), PROMPTS)):
        enc, _ = pipe.encode_image(img)
        ids = tokenizer_image_token(pipe.build_prompt(PROMPTS[0] if same_length else text), tok)
        items.append(BatchItem(ids, enc.clip_feats, [16, 5, 11, 3][i]))
    assert (len({len(it.input_ids) for it in items}) == 1) == same_length
    fast = generate_batch(model, items, eos_token_id=None)
    forward = generate_batch(model, items, eos_token_id=None, use_layer_step=False)
    for a, b in zip(forward, fast):
        assert b.new_ids == a.new_ids and torch.equal(b.seg_hidden, a.seg_hidden)
    assert sum(g.seg_hidden.shape[0] for g in fast) > 0  # the checkpoint answers with [SEG]s


def test_batched_requests_answer_as_sequential_ones(pipe):
    images = _images(4)
    requests = [GenerationRequest(img, p, max_new_tokens=n) for img, p, n in zip(images, PROMPTS, [16, 4, 9, 12])]
    # a follow-up turn on the first image and one request that cannot fit join the same batch
    requests.append(GenerationRequest(images[0], "And the other one?", history=[(PROMPTS[0], "It is [SEG].")]))
    requests.append(GenerationRequest(images[1], "x" * 5000))
    alone = [pipe(r.image, r.prompt, history=r.history, max_new_tokens=r.max_new_tokens) for r in requests[:5]]
    together = run_batch(pipe, requests)
    for one, many in zip(alone, together):
        assert many.text == one.text and many.output_ids == one.output_ids
        assert len(many.masks) == len(one.masks)
        for a, b in zip(many.masks, one.masks):
            assert (a != b).mean() < 1e-3  # float rounding of the padded batch may flip a border pixel
    assert sum(len(r.masks) for r in together[:5]) >= 3  # generated [SEG]s gave masks (see seg_ckpt)
    assert isinstance(together[5], ValueError) and "too long" in str(together[5])


def test_worker_decodes_concurrent_requests_together(pipe):
    worker = ModelWorker(pipe, max_queue=8, max_batch=4, batch_wait_ms=300)
    worker.start()
    images = _images(4)

    async def scenario():
        return await asyncio.gather(*(worker.run(img, p, max_new_tokens=8) for img, p in zip(images, PROMPTS)))

    try:
        jobs = asyncio.run(scenario())
    finally:
        worker.stop()
    assert [j.batch_size for j in jobs] == [4, 4, 4, 4] and worker.largest_batch == 4
    for job, img, p in zip(jobs, images, PROMPTS):
        assert job.result.text == pipe(img, p, max_new_tokens=8).text


def test_streamed_pieces_add_up_and_stop_strings_cut_the_answer(pipe):
    img = _images(1)[0]
    full = pipe(img, PROMPTS[1], max_new_tokens=16)
    pieces = []
    streamed = pipe.run(GenerationRequest(img, PROMPTS[1], max_new_tokens=16, on_text=pieces.append))
    assert streamed.text == full.text and "".join(pieces) == full.text and len(pieces) > 1
    assert streamed.finish_reason == full.finish_reason
    stop = full.text[len(full.text) // 2:][:3]
    cut, pieces = full.text[:full.text.index(stop)].rstrip(), []
    stopped = pipe.run(GenerationRequest(img, PROMPTS[1], max_new_tokens=16, stop=(stop,), on_text=pieces.append))
    assert stopped.text == cut and "".join(pieces) == cut and stopped.finish_reason == "stop"
    assert len(stopped.output_ids) < len(full.output_ids)


def test_sampling_is_repeatable_with_a_seed_and_greedy_at_zero(pipe):
    img = _images(1)[0]
    greedy = pipe(img, PROMPTS[0], max_new_tokens=12)

    def sample(**kw):
        return pipe.run(GenerationRequest(img, PROMPTS[0], max_new_tokens=12, sampling=Sampling(**kw))).output_ids

    assert sample(temperature=0) == greedy.output_ids
    assert sample(temperature=1.5, seed=3) == sample(temperature=1.5, seed=3)
    draws = {tuple(sample(temperature=5.0, seed=s)) for s in range(4)}
    assert len(draws) > 1
    assert sample(temperature=1.0, top_p=1e-6, seed=1) == greedy.output_ids  # only the top token survives
    with pytest.raises(ValueError, match="top_p"):
        Sampling(temperature=1.0, top_p=0)


def _seg_items(pipe):
    from lisa.tokenization import tokenizer_image_token

    items = []
    for i, (img, text) in enumerate(zip(_images(3), PROMPTS)):
        enc, _ = pipe.encode_image(img)
        items.append(BatchItem(tokenizer_image_token(pipe.build_prompt(text), pipe.tokenizer), enc.clip_feats,
                               [16, 5, 11][i]))
    return items


@pytest.mark.parametrize("kind", ["valid", "full", "graph"])
def test_static_rows_decode_the_batch_as_the_eager_batch(pipe, kind):
    """The static-cache batch (3 prompts padded to 4 rows, rows kept to the end): the eager batch's ids
    and [SEG] states. 'graph' traces the step whole (fullgraph) and runs it with the eager backend."""
    from lisa.model.static_decode import FastDecoding

    model = pipe.model
    items = _seg_items(pipe)
    fast = FastDecoding(model, graph=True, backend="eager") if kind == "graph" else FastDecoding(model, window=kind)
    eager = generate_batch(model, items, eos_token_id=None)
    static = generate_batch(model, items, eos_token_id=None, fast=fast)
    assert not fast.broken and list(fast.decoders) and all(key[0] == 4 for key in fast.decoders)
    for a, b in zip(eager, static):
        assert b.new_ids == a.new_ids and b.seg_hidden.shape == a.seg_hidden.shape
        torch.testing.assert_close(b.seg_hidden, a.seg_hidden, rtol=1e-4, atol=1e-5)
    assert sum(g.seg_hidden.shape[0] for g in static) > 0


def test_batched_requests_through_static_rows_answer_as_eager_ones(seg_ckpt):
    from lisa.inference.pipeline import LisaPipeline

    eager = LisaPipeline.from_pretrained(seg_ckpt, device="cpu", max_new_tokens=12, progress=False)
    static = LisaPipeline.for_model(eager.model, eager.tokenizer, max_new_tokens=12, decode="static")
    requests = [GenerationRequest(img, text, max_new_tokens=12) for img, text in zip(_images(3), PROMPTS)]
    a, b = run_batch(eager, requests), run_batch(static, requests)
    assert any(isinstance(key, tuple) for key in static.fast.decoders)  # (rows, bucket): the static rows ran
    for x, y in zip(a, b):
        assert y.output_ids == x.output_ids and y.text == x.text and len(y.masks) == len(x.masks)


def test_static_rows_cache_size_is_counted_from_the_config(pipe):
    from lisa.model.static_batch import cache_bytes

    cfg = pipe.model.llm.config
    kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    per_position = cfg.num_hidden_layers * 2 * kv * (cfg.hidden_size // cfg.num_attention_heads) * 4  # fp32
    assert cache_bytes(pipe.model, 8, 1024) == 8 * 1024 * per_position


def test_a_worker_makes_its_batch_rows_before_the_first_request(pipe):
    """A serving worker makes the static rows its batches will use at start (on CUDA that compiles
    and records their graphs), for 2 to max_batch requests; without a static path there is nothing
    to make."""
    from lisa.inference.pipeline import LisaPipeline
    from lisa.model.static_batch import row_counts

    assert (row_counts(1), row_counts(4), row_counts(5)) == ([], [2, 4], [2, 4, 8])
    static = LisaPipeline.for_model(pipe.model, pipe.tokenizer, max_new_tokens=16, decode="static")
    ModelWorker(static, max_batch=4)
    assert sorted(k[0] for k in static.fast.decoders if isinstance(k, tuple)) == [2, 4]
    assert pipe.fast is None and ModelWorker(pipe, max_batch=4).pipe.fast is None
