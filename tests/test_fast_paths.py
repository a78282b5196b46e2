"""CPU speed paths that must not change results: reused SAM bias buffers, the allocator policy."""

import torch

from helpers.sam import tiny_sam_with_rel_pos
from lisa.model import sam_attention
from lisa.model.allocator import reuse_freed_memory


def _sam():
    return tiny_sam_with_rel_pos().eval()


def test_bias_bands_in_one_buffer_are_bit_identical(monkeypatch):
    monkeypatch.setattr(sam_attention, "BAND_BYTES", 2 * (2 * 2 * 8 * 8 * 8 * 4))  # bands of 2 rows (of 8)
    sam = _sam()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reused = sam.vision_encoder(x).last_hidden_state  # one buffer for every band
        monkeypatch.setattr(sam_attention.BandedRelPosAttention, "reuse_bias_buffer", False)
        fresh = sam.vision_encoder(x).last_hidden_state  # a new bias tensor per band
    assert torch.equal(fresh, reused)


def test_allocator_policy_keeps_results():
    sam = _sam()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = sam.vision_encoder(x).last_hidden_state
        first = reuse_freed_memory()
        assert reuse_freed_memory() == first  # once per process
        after = sam.vision_encoder(x).last_hidden_state
    assert torch.equal(before, after)


def test_images_without_seg_skip_sam_with_the_same_loss_and_gradients(tiny_model, monkeypatch):
    import copy

    from test_model_forward import _batch, _images

    model, tok = tiny_model
    model = copy.deepcopy(model).train()
    for p in model.sam.vision_encoder.parameters():
        p.requires_grad_(True)  # even a trained encoder: skipped images had zero gradients
    with torch.no_grad():
        for p in model.sam.vision_encoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    seen = []
    model.sam.vision_encoder.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    batch = _batch(model, tok, _images(), [[("Segment it.", "[SEG].")], [("Colour?", "Red.")],
                                           [("And this?", "[SEG] and [SEG].")]])
    results = []
    for skip in (True, False):
        monkeypatch.setattr(type(model), "skip_unprompted_images", skip)
        model.zero_grad(set_to_none=True)
        out = model(**batch)
        out["loss"].backward()
        results.append((out["loss"].detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                               if p.grad is not None}))
    assert seen == [2, 3]  # the image without [SEG] was not encoded
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and any(k.startswith("sam.vision_encoder.") for k in grads_a)
    assert all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)


def test_layer_loop_step_is_bit_identical_to_the_decoder_forward(tiny_model, rgb_image):
    from test_static_decode import _ForceSeg, _ids

    from lisa.model.generation import build_prefix, generate, image_prefix_length
    from lisa.model.layer_step import layer_loop_step
    from lisa.preprocess import clip_preprocess

    model, tok = tiny_model
    assert layer_loop_step(model, 16) is not None
    ids = _ids(tok)
    with torch.no_grad():
        feats = model.encode_clip(clip_preprocess(rgb_image, model.config.clip_image_size)[None])[0]
    prefix = build_prefix(model, ids[0].tolist()[:image_prefix_length(ids[0].tolist())], feats)
    for pre in (None, prefix):
        runs = []
        for lean in (True, False):
            with _ForceSeg(model, 3):
                runs.append(generate(model, ids, feats, max_new_tokens=12, eos_token_id=None, prefix=pre,
                                     use_layer_step=lean))
        assert runs[0].new_ids == runs[1].new_ids and runs[0].new_ids.count(model.seg_token_id) >= 3
        assert torch.equal(runs[0].seg_hidden, runs[1].seg_hidden)
