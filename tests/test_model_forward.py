"""The training forward: masks of a batch of images in one decoder call, the answer-only text loss."""

import copy

import numpy as np
import torch
import torch.nn.functional as F

from lisa.constants import IGNORE_INDEX
from lisa.data.collate import collate
from lisa.data.templates import build_conversation
from lisa.model.splice import seg_hidden_positions
from lisa.preprocess import clip_preprocess, sam_preprocess

BATCH_KEYS = ("images", "images_clip", "input_ids", "labels", "attention_mask", "offset", "masks_list",
              "label_list", "resize_list")


def _batch(model, tok, images, conversations):
    """``conversations[i]``: (question, answer) pairs about ``images[i]``; one row per pair, collated
    as the training data loader does."""
    items = []
    for image, convs in zip(images, conversations):
        sam = sam_preprocess(image, model.config.sam_image_size)
        n_seg = sum(a.count("[SEG]") for _, a in convs)
        items.append({"image_path": "img.png", "images": sam.pixels,
                      "images_clip": clip_preprocess(image, model.config.clip_image_size),
                      "conversations": [build_conversation([("<image>\n" + q, a)]) for q, a in convs],
                      "masks": torch.zeros((n_seg, *image.shape[:2])), "label": torch.zeros(image.shape[:2]),
                      "resize": sam.resize, "questions": [q for q, _ in convs],
                      "sampled_classes": [q for q, _ in convs], "inference": False})
    batch = collate(items, tok, use_mm_start_end=model.config.mm_use_im_start_end,
                    num_image_tokens=model.config.num_image_tokens)
    return {k: batch[k] for k in BATCH_KEYS}


def _images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 255, size=shape, dtype=np.uint8) for shape in ((90, 140, 3), (120, 64, 3), (50, 50, 3))]


def test_batch_masks_equal_each_image_decoded_alone(tiny_model):
    model, tok = tiny_model
    model = copy.deepcopy(model)
    with torch.no_grad():  # the tiny checkpoint's encoder is near-constant: make images differ
        g = torch.Generator().manual_seed(0)
        for p in model.sam.vision_encoder.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    images = _images()
    conversations = [[("Segment the cat.", "Sure, [SEG]."), ("And the dog?", "It is [SEG] and [SEG].")],
                     [("How many?", "Two.")],  # no [SEG]: no masks for this image
                     [("Where is it?", "[SEG].")]]
    batch = _batch(model, tok, images, conversations)
    with torch.no_grad():
        out = model(**batch, inference=True)
        sam_embeddings = model.encode_sam(batch["images"])
    assert (sam_embeddings[0] - sam_embeddings[2]).abs().max() > 0.1
    assert out["seg_counts"] == [3, 0, 1]
    assert [tuple(m.shape) for m in out["pred_masks"]] == [(3, 90, 140), (0, 120, 64), (1, 50, 50)]
    # each image's masks, decoded alone from the same [SEG] prompts, as the original loops over images
    with torch.no_grad():
        spliced, hidden, _ = model.run_llm(batch["input_ids"], model.encode_clip(batch["images_clip"]),
                                           torch.tensor([0, 0, 1, 2]), batch["attention_mask"], need_logits=False)
        positions = seg_hidden_positions(batch["input_ids"], spliced.span_end, model.seg_token_id)
        seg = [hidden[n, p] for n, p in enumerate(positions)]
        for b, rows in ((0, [0, 1]), (2, [3])):
            emb = model.seg_embeddings(torch.cat([seg[r] for r in rows]))
            alone = model.decode_masks(sam_embeddings[b:b + 1], emb, batch["resize_list"][b], images[b].shape[:2])
            torch.testing.assert_close(out["pred_masks"][b], alone, atol=1e-5, rtol=1e-5)


def test_decode_many_checks_its_index(tiny_model):
    model, _ = tiny_model
    emb = torch.zeros(2, model.config.out_dim, 4, 4)
    try:
        model.prompter.decode_many(emb, torch.zeros(3, model.config.out_dim), torch.tensor([0, 1]))
    except ValueError as e:
        assert "3 prompts but 2 image indices" in str(e)
    else:
        raise AssertionError("a prompt without an image index must be refused")


def test_text_loss_is_the_mean_over_answer_tokens(tiny_model):
    model, tok = tiny_model
    images = _images()[:2]
    conversations = [[("Segment the cat.", "Sure, [SEG].")], [("How many?", "Two shapes."), ("Colour?", "Red.")]]
    batch = _batch(model, tok, images, conversations)
    with torch.no_grad():
        out = model(**batch)
        spliced, _, logits = model.run_llm(batch["input_ids"], model.encode_clip(batch["images_clip"]),
                                           torch.tensor([0, 1, 1]), batch["attention_mask"], batch["labels"])
    full = F.cross_entropy(logits[:, :-1].flatten(0, 1), spliced.labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
    assert (spliced.labels != IGNORE_INDEX).sum() > 6  # answers are labelled, not only one token
    torch.testing.assert_close(out["ce_loss"], full * model.config.ce_loss_weight)


def test_training_batch_calls_the_mask_decoder_once_with_or_without_seg(tiny_model):
    """Images without [SEG] still send a zero prompt (times 0) through the [SEG] head and the mask
    decoder, in the same single call: every process of a ZeRO-3 run makes the same module calls."""
    model, tok = tiny_model
    model = copy.deepcopy(model).train()
    calls = []
    model.sam.mask_decoder.register_forward_hook(lambda m, args, kw, out: calls.append(kw["image_embeddings"].shape[0]),
                                                 with_kwargs=True)
    images = _images()
    with_grad = []
    for conversations in ([[("How many?", "Two.")], [("Colour?", "Red.")], [("Size?", "Big.")]],
                          [[("Segment it.", "[SEG].")], [("Colour?", "Red.")], [("Size?", "Big.")]]):
        calls.clear()
        model.zero_grad(set_to_none=True)
        out = model(**_batch(model, tok, images, conversations))
        out["loss"].backward()
        assert calls == [3]  # one call: the [SEG] prompt (if any) and a zero prompt per image without
        with_grad.append({n for n, p in model.named_parameters() if p.grad is not None})
    assert out["num_masks"] == 1
    assert with_grad[0] == with_grad[1]
    assert any(n.startswith("sam.mask_decoder.") for n in with_grad[0])
    assert any(n.startswith("text_hidden_fcs.") for n in with_grad[0])


def test_the_collated_batch_is_what_forward_takes():
    """``collate`` returns a ``Batch`` whose model inputs are exactly forward's parameters (nothing
    else is caught and dropped), and ``model(**batch)`` passes them."""
    import inspect

    import pytest

    from lisa.model.batch import Batch
    from lisa.model.lisa import LisaForSegmentation

    params = inspect.signature(LisaForSegmentation.forward).parameters
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    assert set(Batch.MODEL_INPUTS) == set(params) - {"self", "attention_masks"}
    batch = Batch(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, dtype=torch.long),
                  torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.bool), torch.tensor([0, 1]),
                  [torch.zeros(0, 4, 4)], [torch.zeros(4, 4)], [(4, 4)], image_paths=["a.png"])
    assert dict(**batch).keys() == set(Batch.MODEL_INPUTS) and batch["image_paths"] == ["a.png"]
    with pytest.raises(KeyError):
        batch["nope"]
    half = batch.to("cpu", torch.float16)
    assert half.images.dtype == torch.float16 and half.input_ids.dtype == torch.long
    assert batch.images.dtype == torch.float32  # a copy: the batch itself is unchanged
