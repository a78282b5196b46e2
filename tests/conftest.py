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
