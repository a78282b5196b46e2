import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    """A tiny random checkpoint in the released LISA layout (what `lisa make-tiny` writes)."""
    from lisa.checkpoint.tiny import make_tiny

    out = tmp_path_factory.mktemp("tiny") / "ckpt"
    make_tiny(out, seed=0)
    return out


@pytest.fixture(scope="session")
def seg_ckpt(tmp_path_factory):
    """The tiny checkpoint with its [SEG] output row set to 1.2 x that of "▁W", a word the random model
    often writes: greedy answers then hold a few generated [SEG]s (typed ones are text), so the
    commands' mask paths run on real generated masks."""
    import torch

    from lisa.checkpoint.saver import save_pretrained
    from lisa.checkpoint.tiny import make_tiny

    out = tmp_path_factory.mktemp("tiny_seg") / "ckpt"
    model, tok = make_tiny(out, seed=0)
    head = model.llm.get_output_embeddings().weight
    with torch.no_grad():
        head[model.seg_token_id] = 1.2 * head[tok.convert_tokens_to_ids("\u2581W")]
    save_pretrained(model, tok, out, format="lisa", progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_ckpt):
    from lisa.checkpoint.loader import load_pretrained

    model, tok = load_pretrained(tiny_ckpt, precision="fp32", progress=False)
    return model, tok


@pytest.fixture
def rgb_image():
    import numpy as np

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(90, 140, 3), dtype=np.uint8)
    img[20:60, 30:80] = (255, 0, 0)
    return img
