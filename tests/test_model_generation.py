"""KV-cache generation equals a full forward; masks from several [SEG]; the SAM encoding cache."""

import torch

from lisa.constants import IMAGE_TOKEN_INDEX
from lisa.inference.pipeline import LisaPipeline
from lisa.model.generation import generate
from lisa.model.splice import seg_hidden_positions, splice_image_features
from lisa.preprocess import as_rgb_array, clip_preprocess
from lisa.tokenization import ESCAPE_MARK, tokenizer_image_token


def _prompt_ids(tok, text="Segment the red circle."):
    prompt = ("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
              "helpful, detailed, and polite answers to the human's questions. USER: <im_start><image><im_end>\n"
              + text + " ASSISTANT:")
    return torch.tensor([tokenizer_image_token(prompt, tok)])


def _force_seg_logits(model, every=3):
    """Make greedy decoding emit [SEG] every few steps without touching hidden states."""
    head = model.llm.get_output_embeddings()
    orig = head.forward
    calls = {"n": 0}

    def forward(x):
        out = orig(x)
        calls["n"] += 1
        if calls["n"] % every == 0:
            out = out.clone()
            out[..., model.seg_token_id] += 1e4
        return out

    head.forward = forward
    return lambda: setattr(head, "forward", orig)


def test_cached_generation_matches_full_forward(tiny_model, rgb_image):
    model, tok = tiny_model
    ids = _prompt_ids(tok)
    feats = model.encode_clip(clip_preprocess(rgb_image, model.config.clip_image_size)[None])[0]
    restore = _force_seg_logits(model, every=4)
    try:
        gen = generate(model, ids, feats, max_new_tokens=12, eos_token_id=None)
    finally:
        restore()
    assert len(gen.new_ids) == 12
    assert gen.new_ids.count(model.seg_token_id) >= 2
    full = torch.tensor([gen.prompt_ids + gen.new_ids])
    with torch.no_grad():
        sp = splice_image_features(full, model.llm.get_input_embeddings(), [feats])
        hidden = model.decoder(inputs_embeds=sp.inputs_embeds, attention_mask=sp.attention_mask).last_hidden_state
        logits = model.lm_head(hidden)
    n_prompt = ids.shape[1]
    # every generated token is the argmax at its preceding position, except where [SEG] was forced
    for i, tok_id in enumerate(gen.new_ids):
        pos = int(sp.span_end[0, n_prompt - 1 + i])
        if tok_id != model.seg_token_id:
            assert int(logits[0, pos].argmax()) == tok_id
    pos = seg_hidden_positions(full, sp.span_end, model.seg_token_id)[0]
    assert pos.numel() == gen.seg_hidden.shape[0]
    torch.testing.assert_close(gen.seg_hidden, hidden[0, pos], rtol=1e-4, atol=1e-5)


def test_pipeline_returns_one_mask_per_seg_and_reuses_image_encoding(tiny_model, rgb_image):
    model, tok = tiny_model
    pipe = LisaPipeline(model, tok, max_new_tokens=10)
    restore = _force_seg_logits(model, every=3)
    try:
        first = pipe(rgb_image, "Segment the red circle.")
        second = pipe(rgb_image, "Segment the blue square.")
    finally:
        restore()
    assert not first.cache_hit and second.cache_hit
    assert pipe.cache.hits == 1 and pipe.cache.misses == 1
    assert second.timings["sam_encoder"] == 0.0 and second.timings["vision_tower"] == 0.0
    n_seg = first.output_ids.count(model.seg_token_id)
    assert n_seg >= 2 and len(first.masks) == n_seg
    for m in first.masks:
        assert m.dtype == bool and m.shape == rgb_image.shape[:2]
    # the same image given as a PIL image hits the same cache entry
    from PIL import Image
    pipe(Image.fromarray(rgb_image), "Segment the red circle.")
    assert pipe.cache.hits == 2


def test_multi_turn_prompt_and_empty_prompt(tiny_model, rgb_image):
    model, tok = tiny_model
    pipe = LisaPipeline(model, tok, max_new_tokens=4)
    prompt = pipe.build_prompt("And the square?", history=[("Segment the circle.", "Sure, [SEG].")])
    assert prompt.replace(ESCAPE_MARK, "").endswith("USER: <im_start><image><im_end>\nSegment the circle. "
                                                    "ASSISTANT: Sure, [SEG].</s>USER: And the square? ASSISTANT:")
    # the history's [SEG] is text now; the template's own </s> and image tokens are still tokens
    ids = tokenizer_image_token(prompt, tok)
    assert model.seg_token_id not in ids and ids.count(tok.eos_token_id) == 1 and ids.count(-200) == 1
    try:
        pipe(rgb_image, "   ")
    except ValueError as e:
        assert "empty" in str(e)
    else:
        raise AssertionError("an empty prompt must be refused")


def test_teacher_forced_forward_matches_original_seg_position(tiny_model, rgb_image):
    """The forward's [SEG] embedding is the hidden state of the token before [SEG], as the original
    takes it."""
    model, tok = tiny_model
    prompt_ids = tokenizer_image_token(
        "USER: <im_start><image><im_end>\nWhat is it? ASSISTANT: Sure, [SEG].</s>", tok)
    ids = torch.tensor([prompt_ids])
    seg_at = prompt_ids.index(model.seg_token_id)
    arr = as_rgb_array(rgb_image)
    clip = clip_preprocess(arr, model.config.clip_image_size)[None]
    feats = model.encode_clip(clip)
    with torch.no_grad():
        sp = splice_image_features(ids, model.llm.get_input_embeddings(), [feats[0]])
        hidden = model.decoder(inputs_embeds=sp.inputs_embeds, attention_mask=sp.attention_mask).last_hidden_state
    p = model.config.num_image_tokens
    expected = hidden[0, seg_at - 1 + p - 1]  # token before [SEG], shifted by P-1 spliced positions
    got = hidden[0, seg_hidden_positions(ids, sp.span_end, model.seg_token_id)[0]]
    assert torch.equal(got[0], expected)


def test_only_generated_seg_tokens_give_masks(tiny_model, rgb_image):
    model, tok = tiny_model
    pipe = LisaPipeline(model, tok, max_new_tokens=2)
    restore = _force_seg_logits(model, every=1000)  # no generated [SEG]
    try:
        typed = pipe(rgb_image, "Segment [SEG] please.")
        later = pipe(rgb_image, "Thanks.", history=[("Segment [SEG] please.", "Sure, [SEG].")])
        both = pipe(rgb_image, "Now [SEG] and [SEG].", history=[("Segment [SEG] please.", "Sure, [SEG].")])
    finally:
        restore()
    # typed and history [SEG]s are text: no mask is decoded for them
    assert typed.masks == [] and later.masks == [] and both.masks == []
    restore = _force_seg_logits(model, every=2)
    try:
        generated = pipe(rgb_image, "Now [SEG] and [SEG].", history=[("Segment [SEG] please.", "Sure, [SEG].")])
    finally:
        restore()
    assert len(generated.masks) == generated.output_ids.count(model.seg_token_id) == 1


def test_prefix_cache_gives_the_same_answers_as_a_full_prefill(tiny_model, rgb_image):
    model, tok = tiny_model
    cached = LisaPipeline(model, tok, max_new_tokens=8)
    uncached = LisaPipeline(model, tok, max_new_tokens=8, cache_size=0)
    for prompt in ("Segment the red circle.", "And the blue one?", "Segment the red circle."):
        restore = _force_seg_logits(model, every=3)
        try:
            a = cached(rgb_image, prompt)
        finally:
            restore()
        restore = _force_seg_logits(model, every=3)
        try:
            b = uncached(rgb_image, prompt)
        finally:
            restore()
        assert a.output_ids == b.output_ids
        assert len(a.masks) == len(b.masks) >= 1
        for x, y in zip(a.masks, b.masks):
            assert (x != y).mean() < 0.01
    enc, hit = cached.encode_image(rgb_image)
    assert hit and enc.prefix is not None and enc.prefix.ids[-1] == IMAGE_TOKEN_INDEX
    assert uncached.encode_image(rgb_image)[0].prefix is None


def test_reserved_cache_matches_concatenation_and_grows():
    from lisa.model.generation import reserved_cache

    torch.manual_seed(0)
    steps = [torch.randn(1, 2, n, 4) for n in (5, 1, 1, 3, 1)]
    cache = reserved_cache(num_layers=1, capacity=6)  # too small: it must grow and keep what it holds
    for kv in steps:
        keys, values = cache.layers[0].update(kv, kv * 2)
    expected = torch.cat(steps, dim=-2)
    assert torch.equal(keys, expected) and torch.equal(values, expected * 2)
    assert cache.get_seq_length() == expected.shape[-2]
    forked = reserved_cache(num_layers=1, capacity=20, prefix=cache)
    k2, _ = forked.layers[0].update(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    assert torch.equal(k2[..., :-1, :], expected)
    assert torch.equal(cache.layers[0].keys, expected)  # the prefix is left as it was


def test_decoding_layout_keeps_weights_outputs_and_saved_files(tiny_ckpt, rgb_image, tmp_path):
    from lisa.checkpoint.loader import load_pretrained
    from lisa.checkpoint.saver import save_pretrained
    from lisa.model.generation import use_decoding_layout

    model, tok = load_pretrained(tiny_ckpt, precision="fp32", progress=False)
    ids = _prompt_ids(tok)
    feats = model.encode_clip(clip_preprocess(rgb_image, model.config.clip_image_size)[None])[0]
    before_state = {k: v.clone() for k, v in model.state_dict().items()}

    def run():
        restore = _force_seg_logits(model, every=3)
        try:
            return generate(model, ids, feats, max_new_tokens=8, eos_token_id=None)
        finally:
            restore()

    before = run()
    linears = [m for m in model.llm.modules() if type(m) is torch.nn.Linear]
    assert use_decoding_layout(model) == len(linears) > 0
    after = run()
    assert all(not m.weight.is_contiguous() and m.weight.stride() == (1, m.weight.shape[0]) for m in linears)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before_state.items())
    assert after.new_ids == before.new_ids
    torch.testing.assert_close(after.seg_hidden, before.seg_hidden, rtol=1e-4, atol=1e-5)
    save_pretrained(model, tok, tmp_path / "saved")
    reloaded, _ = load_pretrained(tmp_path / "saved", precision="fp32", progress=False)
    assert all(torch.equal(v, before_state[k]) for k, v in reloaded.state_dict().items())
    bf16, _ = load_pretrained(tiny_ckpt, precision="bf16", progress=False)  # only fp32 gains
    assert use_decoding_layout(bf16) == 0
    assert all(m.weight.is_contiguous() for m in bf16.llm.modules() if type(m) is torch.nn.Linear)
