"""Collation of dataset items into a model ``Batch``, as the original ``collate_fn`` does it (with its
truncation bug fixed).

Per conversation: ``<image>`` -> ``<im_start><image><im_end>`` (when ``use_mm_start_end``), ids from
:func:`lisa.tokenization.tokenizer_image_token` (each ``<image>`` = one ``IMAGE_TOKEN_INDEX``), labels = ids with
everything but the assistant answers and their closing ``</s>`` set to -100, computed with the
original's round walk so the result is exactly the original's.

Truncation: the original cut every training sequence to ``model_max_length - 255`` tokens after
masking, so a late ``[SEG]`` could be cut away from its mask and crash the loss (**bug**). Here the
limit is per conversation, ``model_max_length - (num_image_tokens - 1) * #images`` (the length
after splicing in the image features); a conversation longer than that is truncated only when its
``[SEG]`` tokens and part of its answer survive; otherwise it is dropped together with its masks,
counted (``truncated``) and warned about. An image left without conversations leaves the batch.
"""

from __future__ import annotations

import functools

import torch

from ..constants import IGNORE_INDEX, IMAGE_TOKEN, IMAGE_TOKEN_INDEX, SEG_TOKEN
from ..conversation import expand_image_token, get_template
from ..model.batch import Batch
from ..tokenization import encode, seg_token_id, tokenizer_image_token
from .problems import DataError, ProblemCounter

_DEFAULT_COUNTER: ProblemCounter | None = None


def _default_counter() -> ProblemCounter:
    global _DEFAULT_COUNTER
    if _DEFAULT_COUNTER is None:
        _DEFAULT_COUNTER = ProblemCounter()
    return _DEFAULT_COUNTER


def mask_labels(conversation: str, input_ids: list[int], tokenizer, conv_type: str = "llava_v1"):
    """Labels for one unpadded conversation, or ``None`` when the round walk does not land on the
    tokenized length (the original asserted; such a conversation gets no text supervision)."""
    conv = get_template(conv_type)
    sep, sep2 = conv.answer_separator, conv.round_separator
    if IMAGE_TOKEN in conversation:
        def tok(text):
            return tokenizer_image_token(text, tokenizer)
    else:
        def tok(text):
            return encode(tokenizer, text, add_bos=True)
    target = list(input_ids)
    target[:1] = [IGNORE_INDEX] * min(1, len(target))
    cur = 1
    for rou in conversation.split(sep2):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            return None
        round_len = len(tok(rou))
        # -2: the BOS of this encoding and the trailing "▁" of the separator's final space; the
        # BOS counted in round_len stands in for the "</s>" removed by split.
        instruction_len = len(tok(parts[0] + sep)) - 2
        target[cur:cur + instruction_len] = [IGNORE_INDEX] * max(0, min(instruction_len, len(target) - cur))
        cur += round_len
    target[cur:] = [IGNORE_INDEX] * max(0, len(target) - cur)
    if cur != len(input_ids):
        return None
    return target


def conversation_labels(conversation: str, input_ids: list[int], tokenizer, conv_type: str = "llava_v1"):
    """Labels for one conversation: the original's round walk for the SentencePiece LLaMA tokenizers
    and templates it was written for (ids exactly as the original), answer spans otherwise
    (:mod:`lisa.data.labels`: byte-level tokenizers, tokenizers without BOS, other templates)."""
    from ..tokenization import _rules
    from .labels import span_labels

    if _rules(tokenizer).sentencepiece_like and get_template(conv_type).style in ("two", "llama_2"):
        return mask_labels(conversation, input_ids, tokenizer, conv_type)
    return span_labels(conversation, input_ids, tokenizer, conv_type)


def _masks_per_conversation(ids_list, seg_id):
    if seg_id is None:
        return [0] * len(ids_list)
    return [sum(1 for t in ids if t == seg_id) for ids in ids_list]


def collate(batch: list[dict], tokenizer, conv_type: str = "llava_v1", use_mm_start_end: bool = True,
            model_max_length: int = 512, num_image_tokens: int = 256,
            counter: ProblemCounter | None = None) -> Batch:
    counter = counter if counter is not None else _default_counter()
    if not batch:
        raise DataError("collate got an empty batch")
    inference = bool(batch[0]["inference"])
    if any(bool(item["inference"]) != inference for item in batch):
        raise DataError("a batch mixes training and validation items")
    # a plain LLaVA tokenizer has no [SEG]: text-only batches (VQA, --no_seg training) still collate
    seg_id = seg_token_id(tokenizer) if SEG_TOKEN in tokenizer.get_vocab() else None
    kept_items, ids_all, labels_all, convs_all, offset = [], [], [], [], [0]
    for item in batch:
        convs = [expand_image_token(c) if use_mm_start_end else c for c in item["conversations"]]
        ids_list = [tokenizer_image_token(c, tokenizer) for c in convs]
        per_conv = _masks_per_conversation(ids_list, seg_id)
        masks = item["masks"]
        if sum(per_conv) != masks.shape[0]:
            raise DataError(f"{item['image_path']}: {sum(per_conv)} [SEG] tokens in its conversations "
                            f"but {masks.shape[0]} masks")
        keep_convs, keep_masks, start = [], [], 0
        for conv, ids, n_seg in zip(convs, ids_list, per_conv):
            mask_slice = slice(start, start + n_seg)
            start += n_seg
            labels = conversation_labels(conv, ids, tokenizer, conv_type)
            if labels is None:
                counter.count("label_mismatch", item["image_path"],
                              "the answer rounds did not line up with the tokenized conversation; "
                              "its text is not supervised")
                labels = [IGNORE_INDEX] * len(ids)
            if not inference:
                limit = model_max_length - (num_image_tokens - 1) * ids.count(IMAGE_TOKEN_INDEX)
                if len(ids) > limit:
                    seg_cut = any(t == seg_id for t in ids[max(limit, 0):])
                    answer_kept = any(lab != IGNORE_INDEX for lab in labels[:max(limit, 0)])
                    if seg_cut or not answer_kept or limit <= 0:
                        counter.count("truncated", item["image_path"],
                                      f"conversation of {len(ids)} tokens (+{num_image_tokens - 1} per "
                                      f"image) exceeds model_max_length={model_max_length} and its "
                                      "[SEG]/answer would be cut: dropped with its masks")
                        continue
                    ids, labels = ids[:limit], labels[:limit]
            keep_convs.append((conv, ids, labels))
            keep_masks.append(masks[mask_slice])
        if not keep_convs:
            continue
        kept_items.append((item, torch.cat(keep_masks, dim=0) if keep_masks else masks[:0]))
        for conv, ids, labels in keep_convs:
            convs_all.append(conv)
            ids_all.append(ids)
            labels_all.append(labels)
        offset.append(offset[-1] + len(keep_convs))
    if not kept_items:
        raise DataError(f"no conversation of this batch fits model_max_length={model_max_length} "
                        f"({[item['image_path'] for item in batch]})")

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    n, t = len(ids_all), max(len(ids) for ids in ids_all)
    input_ids = torch.full((n, t), pad_id, dtype=torch.long)
    labels = torch.full((n, t), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((n, t), dtype=torch.bool)
    for k, (ids, lab) in enumerate(zip(ids_all, labels_all)):
        input_ids[k, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        labels[k, : len(lab)] = torch.tensor(lab, dtype=torch.long)
        attention_mask[k, : len(ids)] = True
    items = [it for it, _ in kept_items]
    return Batch(
        images=torch.stack([it["images"] for it in items]),
        images_clip=torch.stack([it["images_clip"] for it in items]),
        input_ids=input_ids,
        labels=labels,
        attention_mask=attention_mask,
        offset=torch.tensor(offset, dtype=torch.long),
        masks_list=[m.float() for _, m in kept_items],
        label_list=[it["label"] for it in items],
        resize_list=[tuple(it["resize"]) for it in items],
        inference=inference,
        image_paths=[it["image_path"] for it in items],
        questions_list=[it["questions"] for it in items],
        sampled_classes_list=[it["sampled_classes"] for it in items],
        conversation_list=convs_all,
    )


def make_collate_fn(tokenizer, **kwargs):
    """``collate`` with its options bound, for ``DataLoader(collate_fn=...)``."""
    return functools.partial(collate, tokenizer=tokenizer, **kwargs)
