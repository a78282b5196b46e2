"""The training forward: masks of a batch of images in one decoder call, the answer-only text loss."""

import copy

import numpy as np
import torch
import torch.nn.functional as F

from lisa.constants import IGNORE_INDEX
from lisa.model.splice import seg_hidden_positions
from lisa.preprocess import clip_preprocess, sam_preprocess
from lisa.tokenization import tokenizer_image_token

PROMPT = "USER: <im_start><image><im_end>\n{q} ASSISTANT: {a}</s>"


def _batch(model, tok, images, conversations):
    """``conversations[i]``: (question, answer) pairs about ``images[i]``; one row per pair."""
    rows, labels, offset = [], [], [0]
    for convs in conversations:
        for q, a in convs:
            ids = tokenizer_image_token(PROMPT.format(q=q, a=a), tok)
            answer_from = len(tokenizer_image_token(PROMPT.format(q=q, a="").removesuffix("</s>"), tok))
            rows.append(ids)
            labels.append([IGNORE_INDEX] * answer_from + ids[answer_from:])
        offset.append(offset[-1] + len(convs))
    width = max(map(len, rows))
    input_ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    attention_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.bool)
    label_ids = torch.tensor([r + [IGNORE_INDEX] * (width - len(r)) for r in labels])
    size = model.config.sam_image_size
    sam = [sam_preprocess(im, size) for im in images]
    n_seg = [sum(a.count("[SEG]") for _, a in convs) for convs in conversations]
    return dict(
        images=torch.stack([s.pixels for s in sam]),
        images_clip=torch.stack([clip_preprocess(im, model.config.clip_image_size) for im in images]),
        input_ids=input_ids, labels=label_ids, attention_mask=attention_mask, offset=torch.tensor(offset),
        masks_list=[torch.zeros((n, *im.shape[:2])) for n, im in zip(n_seg, images)],
        label_list=[torch.zeros(im.shape[:2]) for im in images],
        resize_list=[s.resize for s in sam])


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
