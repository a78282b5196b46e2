"""Image-token splicing (the original's "+255" shift, computed from the data) and the [SEG]
embedding position (the hidden state of the token before [SEG])."""

import torch
from torch import nn

from lisa.constants import IGNORE_INDEX
from lisa.constants import IMAGE_TOKEN_INDEX as IMG
from lisa.model.splice import seg_hidden_positions, splice_image_features

SEG = 50


def _embed():
    torch.manual_seed(0)
    return nn.Embedding(64, 8)


def test_one_image_256_patches_matches_original_255_shift():
    ids = torch.tensor([[1, 3, IMG, 4, 5, 6, SEG, 7, 2]])
    feats = [torch.randn(256, 8)]
    out = splice_image_features(ids, _embed(), feats)
    assert out.inputs_embeds.shape == (1, 9 + 255, 8)
    pos = seg_hidden_positions(ids, out.span_end, SEG)[0]
    # the original: mask = (ids[:, 1:] == SEG), one trailing column, then 255 columns prepended
    orig = torch.cat([torch.zeros(1, 255, dtype=torch.bool), (ids[:, 1:] == SEG),
                      torch.zeros(1, 1, dtype=torch.bool)], 1)
    assert pos.tolist() == orig[0].nonzero().flatten().tolist() == [5 + 255]
    assert torch.equal(out.inputs_embeds[0, 2:258], feats[0])


def test_other_patch_counts_and_two_images_in_one_sequence():
    ids = torch.tensor([[1, IMG, 3, IMG, 4, SEG, 5, SEG, 2]])
    feats = [torch.randn(576, 8), torch.randn(10, 8)]
    out = splice_image_features(ids, _embed(), feats)
    assert out.inputs_embeds.shape[1] == 9 + 575 + 9
    pos = seg_hidden_positions(ids, out.span_end, SEG)[0].tolist()
    # token 4 (index 4) sits after both images: 4 + 575 + 9; token 5 (index 6) likewise
    assert pos == [4 + 575 + 9, 6 + 575 + 9]
    assert torch.equal(out.inputs_embeds[0, 1:577], feats[0])
    assert torch.equal(out.inputs_embeds[0, 578:588], feats[1])


def test_rows_of_different_lengths_are_padded_and_labels_follow():
    emb = _embed()
    ids = torch.tensor([[1, IMG, 4, SEG, 2, 0], [1, 3, 4, 5, SEG, 2]])
    labels = ids.clone()
    labels[0, :3] = IGNORE_INDEX
    mask = ids != 0
    mask[1] = True
    out = splice_image_features(ids, emb, [torch.randn(4, 8)], mask, labels)
    assert out.inputs_embeds.shape[:2] == (2, 9)
    assert out.lengths.tolist() == [9, 6]
    assert out.attention_mask[0].tolist() == [True] * 8 + [False]  # the pad token stays masked
    assert out.attention_mask[1].tolist() == [True] * 6 + [False] * 3
    assert out.labels[0].tolist() == [IGNORE_INDEX] * 6 + [SEG, 2, 0]
    assert out.labels[1, 6:].tolist() == [IGNORE_INDEX] * 3
    assert [p.tolist() for p in seg_hidden_positions(ids, out.span_end, SEG)] == [[5], [3]]
    assert torch.equal(out.inputs_embeds[1, :6], emb(ids[1]))


def test_mismatched_image_count_is_an_error():
    ids = torch.tensor([[1, IMG, IMG, 2]])
    try:
        splice_image_features(ids, _embed(), [torch.randn(3, 8)])
    except ValueError as e:
        assert "2 image tokens" in str(e)
    else:
        raise AssertionError("expected ValueError")
