"""The static-cache decode path (CUDA graphs on CUDA) gives the eager path's ids and [SEG] states."""

import shutil

import numpy as np
import pytest
import torch

from lisa.inference.pipeline import LisaPipeline
from lisa.model.generation import build_prefix, generate, image_prefix_length
from lisa.model.static_decode import FastDecoding, StaticDecoder, fast_decode_unsupported, make_fast_decoding
from lisa.preprocess import clip_preprocess, sam_preprocess
from lisa.tokenization import tokenizer_image_token

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _ids(tok, text="Segment the red circle."):
    prompt = ("A chat between a curious human and an artificial intelligence assistant. USER: "
              "<im_start><image><im_end>\n" + text + " ASSISTANT:")
    return torch.tensor([tokenizer_image_token(prompt, tok)])


class _ForceSeg:
    """Greedy decoding emits [SEG] every few LM-head calls (the hidden states are untouched)."""

    def __init__(self, model, every=3):
        self.head, self.model, self.every, self.calls = model.lm_head, model, every, 0

    def __enter__(self):
        orig = self.orig = self.head.forward

        def forward(x):
            out = orig(x)
            self.calls += 1
            if self.calls % self.every == 0:
                out = out.clone()
                out[..., self.model.seg_token_id] += 1e4
            return out

        self.head.forward = forward
        return self

    def __exit__(self, *exc):
        self.head.forward = self.orig


def _both(model, ids, feats, fast, prefix=None, n=12, every=3):
    with _ForceSeg(model, every):
        eager = generate(model, ids, feats, max_new_tokens=n, eos_token_id=None, prefix=prefix)
    with _ForceSeg(model, every):
        static = fast.generate(model, ids, feats, max_new_tokens=n, eos_token_id=None, prefix=prefix)
    return eager, static


@pytest.fixture
def feats(tiny_model, rgb_image):
    model, _ = tiny_model
    with torch.no_grad():
        return model.encode_clip(clip_preprocess(rgb_image, model.config.clip_image_size)[None])[0]


def test_valid_window_is_bit_identical_to_eager_with_and_without_prefix(tiny_model, feats):
    model, tok = tiny_model
    ids = _ids(tok)
    fast = FastDecoding(model)  # no graph: the 'valid' window
    assert fast.window == "valid" and not fast.graph
    prefix = build_prefix(model, ids[0].tolist()[:image_prefix_length(ids[0].tolist())], feats)
    for pre in (None, prefix, prefix):  # the second use of the prefix: the buffers are reused
        eager, static = _both(model, ids, feats, fast, pre)
        assert static.new_ids == eager.new_ids and len(static.new_ids) == 12
        assert static.new_ids.count(model.seg_token_id) >= 3
        assert torch.equal(static.seg_hidden, eager.seg_hidden)
    assert list(fast.decoders) == [256]  # one bucket, made once


def test_full_window_the_graph_shape_gives_the_same_ids(tiny_model, feats):
    """The CUDA-graph shape (attention over the whole bucket, unwritten positions masked), eagerly."""
    model, tok = tiny_model
    ids = _ids(tok, "And the blue square?")
    fast = FastDecoding(model, window="full")
    eager, static = _both(model, ids, feats, fast, n=16, every=4)
    assert static.new_ids == eager.new_ids
    assert static.seg_hidden.shape == eager.seg_hidden.shape and static.seg_hidden.shape[0] >= 3
    torch.testing.assert_close(static.seg_hidden, eager.seg_hidden, rtol=1e-5, atol=1e-5)


def test_the_graph_step_traces_whole_and_gives_the_same_ids(tiny_model, feats):
    """The step a CUDA graph records, traced by torch.compile with fullgraph=True (any graph break
    would raise) and run on the CPU with the eager backend."""
    model, tok = tiny_model
    ids = _ids(tok)
    fast = FastDecoding(model, graph=True, backend="eager")
    assert fast.window == "full"
    fast.warm_up(ids.shape[1] + model.config.num_image_tokens + 8)  # traced here, before the patched head
    assert not fast.broken and fast.decoders
    eager, static = _both(model, ids, feats, fast, n=8, every=3)
    assert static.new_ids == eager.new_ids
    torch.testing.assert_close(static.seg_hidden, eager.seg_hidden, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="inductor's CPU code generation needs a C++ compiler")
def test_the_graph_step_compiles_with_inductor_and_gives_the_eager_ids(tiny_model, feats):
    """What CUDA runs is the step compiled by inductor with mode="reduce-overhead"; here the same
    compile generates CPU code (about 20 s a step), which checks that every operation of the single
    and the batched step lowers."""
    model, tok = tiny_model
    ids = _ids(tok)
    fast = FastDecoding(model, graph=True, backend="inductor")
    fast.warm_up(ids.shape[1] + model.config.num_image_tokens + 12)
    assert not fast.broken and fast.warmup_s
    eager = generate(model, ids, feats, max_new_tokens=12, eos_token_id=None)
    compiled = fast.generate(model, ids, feats, max_new_tokens=12, eos_token_id=None)
    assert compiled.new_ids == eager.new_ids
    # the batch's step (3 prompts of different lengths in 4 rows)
    from lisa.model.batch_generation import BatchItem, generate_batch

    items = [BatchItem(_ids(tok, text)[0].tolist(), feats, 8)
             for text in ("Segment the red circle.", "hi", "What is in this picture, and where?")]
    batched = generate_batch(model, items, eos_token_id=None, fast=fast)
    assert not fast.broken and (4, fast.bucket(max(len(i.input_ids) for i in items))) in fast.decoders
    assert [g.new_ids for g in batched] == [g.new_ids for g in generate_batch(model, items, eos_token_id=None)]


def test_pipeline_static_decode_matches_eager_masks_and_follow_ups(tiny_model, rgb_image):
    model, tok = tiny_model
    eager = LisaPipeline(model, tok, max_new_tokens=10, decode="eager")
    static = LisaPipeline(model, tok, max_new_tokens=10, decode="static")
    assert eager.fast is None and static.fast is not None
    history = [("Segment the circle.", "Sure, [SEG].")]
    for prompt, hist in (("Segment the red circle.", None), ("And the square?", None), ("Both?", history)):
        with _ForceSeg(model, 3):
            a = eager(rgb_image, prompt, hist)
        with _ForceSeg(model, 3):
            b = static(rgb_image, prompt, hist)
        assert b.output_ids == a.output_ids and b.text == a.text
        assert len(b.masks) == len(a.masks) >= 2
        assert all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks))
    assert static.cache.hits == 2  # follow-ups reused the image encoding and its prefix


def test_buckets_overflow_and_capacity():
    class Cfg:
        max_position_embeddings = 3000

    class Llm:
        config = Cfg()

    class M:
        llm = Llm()

    fast = FastDecoding(M(), window="valid")
    assert fast.buckets == (256, 512, 1024, 2048, 3000)
    assert fast.bucket(1) == 256 and fast.bucket(257) == 512 and fast.bucket(3000) == 3000
    assert fast.bucket(3001) is None and fast.decoder(3001) is None


def test_longer_than_the_largest_bucket_falls_back(tiny_model, feats):
    model, tok = tiny_model
    ids = _ids(tok)
    fast = FastDecoding(model)
    fast.buckets = (64,)
    assert fast.generate(model, ids, feats, max_new_tokens=400, eos_token_id=None) is None
    dec = StaticDecoder(model, 8, window="valid")
    with pytest.raises(ValueError, match="do not fit"):
        dec.prefill(torch.zeros(1, 9, model.config.hidden_size))
    with pytest.raises(ValueError, match="full"):
        StaticDecoder(model, 8, window="valid", graph=True)


def test_where_the_graph_path_runs(tiny_model):
    model, _ = tiny_model
    assert "CUDA" in fast_decode_unsupported(model)
    assert make_fast_decoding(model, compile=True) is None  # CPU: eager, numerics unchanged
    assert make_fast_decoding(model, decode="eager") is None
    with pytest.raises(ValueError, match="not available"):
        make_fast_decoding(model, decode="graph")
    with pytest.raises(ValueError, match="decode must be"):
        make_fast_decoding(model, decode="fast")
    model.quantization = "4bit"
    try:
        assert "4bit" in fast_decode_unsupported(model) or "CUDA" in fast_decode_unsupported(model)
    finally:
        del model.quantization


def test_sam_preprocess_on_a_device_is_the_same(rgb_image):
    a = sam_preprocess(rgb_image, 128)
    b = sam_preprocess(rgb_image, 128, device="cpu")
    assert torch.equal(a.pixels, b.pixels) and a.resize == b.resize


@cuda
def test_cuda_graph_decode_gives_the_eager_ids(seg_ckpt, rgb_image):
    """bf16 on the GPU: the graph path's ids equal the eager path's on these prompts (the checkpoint
    answers with generated [SEG]s, so their masks are compared too; nothing is patched inside the
    captured step, which would recompile it at every token)."""
    from lisa.checkpoint.loader import load_pretrained

    model, tok = load_pretrained(seg_ckpt, precision="bf16", device=torch.device("cuda"), progress=False)
    graph = LisaPipeline(model, tok, max_new_tokens=10)
    assert graph.fast is not None and graph.fast.graph and graph.fast.warmup_s and not graph.fast.broken
    assert graph.compiled_encoders
    eager = LisaPipeline(model, tok, max_new_tokens=10, compile=False)
    for prompt in ("Segment the red circle.", "And the square?"):
        a, b = eager(rgb_image, prompt), graph(rgb_image, prompt)
        assert b.output_ids == a.output_ids and len(b.masks) == len(a.masks)


@cuda
def test_sam_preprocess_on_cuda_is_the_same(rgb_image):
    a = sam_preprocess(rgb_image, 128)
    b = sam_preprocess(rgb_image, 128, device="cuda")
    assert torch.equal(a.pixels, b.pixels.cpu())


def test_no_compile_flag_reaches_the_pipeline(monkeypatch):
    import argparse

    from lisa.inference import flags, pipeline

    seen = {}
    monkeypatch.setattr(pipeline.LisaPipeline, "from_pretrained", classmethod(lambda cls, path, **kw: seen.update(kw)))
    ap = argparse.ArgumentParser()
    flags.add_model_args(ap)
    flags.load_pipeline(ap.parse_args(["--version", "m"]))
    assert seen["compile"] is True
    flags.load_pipeline(ap.parse_args(["--version", "m", "--no_compile"]))
    assert seen["compile"] is False


def test_static_decode_takes_a_picker_and_a_token_callback(tiny_model, feats):
    model, tok = tiny_model
    ids = _ids(tok)

    def second_best(logits):
        return int(logits.topk(2, dim=-1).indices[0, 1])

    runs = []
    for fast in (None, FastDecoding(model), FastDecoding(model, window="full")):
        seen = []
        kwargs = dict(max_new_tokens=12, eos_token_id=None, pick=second_best,
                      on_token=lambda i: seen.append(i) or len(seen) >= 5)
        gen = fast.generate(model, ids, feats, **kwargs) if fast else generate(model, ids, feats, **kwargs)
        assert gen.new_ids == seen and len(seen) == 5
        runs.append(gen.new_ids)
    assert runs[0] == runs[1] == runs[2]


def test_serve_model_specs_carry_no_compile(monkeypatch, tiny_ckpt):
    from lisa.inference import flags
    from lisa.serve.models import parse_spec

    seen = []

    class Loaded:
        class cache:
            max_items = 0

    monkeypatch.setattr(flags, "load_pipeline", lambda args, **_: seen.append(args.no_compile) or Loaded())
    parse_spec(f"{tiny_ckpt}:name=a,no_compile=true").load()
    parse_spec(f"{tiny_ckpt}:name=b").with_defaults({"no_compile": True}).load()
    parse_spec(f"{tiny_ckpt}:name=c").with_defaults({"no_compile": False}).load()
    assert seen == [True, True, False]


@pytest.mark.parametrize("failing", ["encoders", "decode"])
def test_a_compiler_failing_at_warm_up_leaves_an_eager_pipeline(tiny_model, rgb_image, monkeypatch, caplog, failing):
    """Where compiling fails (a GPU without Triton, say), loading still works: the pipeline says why
    and answers eagerly, with the eager path's answers. Simulated on the CPU with a compiler backend
    that raises, for the encoders and for the decode step."""
    import lisa.inference.pipeline as pipeline_module

    def broken_backend(graph_module, example_inputs):
        raise RuntimeError("no compiler for this device")

    def compile_on_cpu(model):
        model.vision_tower.vision_tower.compile(backend=broken_backend)
        return ["vision_tower"]

    model, tok = tiny_model
    want = LisaPipeline(model, tok, max_new_tokens=8, compile=False)(rgb_image, "Segment the red circle.")
    if failing == "encoders":
        monkeypatch.setattr(pipeline_module, "compile_encoders", compile_on_cpu)
    monkeypatch.setattr(pipeline_module, "make_fast_decoding",
                        lambda model, compile, decode: FastDecoding(model, graph=True, backend=broken_backend))
    with caplog.at_level("WARNING"):
        pipe = LisaPipeline(model, tok, max_new_tokens=8)
    assert "failed" in caplog.text and "no compiler for this device" in caplog.text
    assert pipe.fast is None and pipe.compiled_encoders == []
    assert getattr(model.vision_tower.vision_tower, "_compiled_call_impl", None) is None  # eager again
    got = pipe(rgb_image, "Segment the red circle.")
    assert got.output_ids == want.output_ids and got.text == want.text
    assert len(got.masks) == len(want.masks) and all(np.array_equal(a, b) for a, b in zip(got.masks, want.masks))


def test_a_bucket_failing_to_compile_hands_its_query_to_eager_decoding_before_any_token(tiny_model, feats):
    """A longer query's new bucket is compiled before its first token: when that fails, generate()
    returns None (the caller decodes eagerly) without having streamed a token, and later queries go
    eager too."""
    model, tok = tiny_model

    def broken_backend(graph_module, example_inputs):
        raise RuntimeError("no compiler for this device")

    fast = FastDecoding(model, graph=True, backend=broken_backend)
    streamed = []
    assert fast.generate(model, _ids(tok), feats, max_new_tokens=4, on_token=streamed.append) is None
    assert streamed == [] and "no compiler for this device" in fast.broken and not fast.decoders
    assert fast.decoder(10) is None  # no further attempts
