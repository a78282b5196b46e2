"""Ordinary chat and eval runs emit no FutureWarning / DeprecationWarning from this package's calls
(transformers' `past_key_values` warning was one): the current APIs are used, nothing is silenced."""

import contextlib
import traceback
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

import lisa
from helpers.train import data_tree

LISA_DIR = str(Path(lisa.__file__).resolve().parent)
DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


@contextlib.contextmanager
def deprecations_from_lisa():
    """Records deprecation warnings raised in lisa/ or by a library while lisa's code called it.

    A dependency that warns while it is first imported is left out: that is not a call this package
    can change."""
    found: list[str] = []

    def record(message, category, filename, lineno, file=None, line=None):
        if not issubclass(category, DEPRECATIONS):
            return
        frames = [f.filename for f in traceback.extract_stack()[:-1]]
        in_lisa = str(filename).startswith(LISA_DIR)
        called_from_lisa = any(f.startswith(LISA_DIR) for f in frames)
        importing = any("importlib._bootstrap" in f for f in frames)
        if in_lisa or (called_from_lisa and not importing):
            found.append(f"{category.__name__}: {message} ({filename}:{lineno})")

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        yield found


def test_the_recorder_sees_a_deprecation_raised_through_lisa(tiny_model, monkeypatch):
    """The check itself: the old cache argument name is reported when lisa's code passes it."""
    import torch

    from lisa.model import generation

    model, _ = tiny_model
    monkeypatch.setattr(generation, "_cache_argument", lambda decoder_type: "past_key_values")
    cache = generation.reserved_cache(model.llm.config.num_hidden_layers, 4)
    with deprecations_from_lisa() as found:
        generation.run_decoder(model.decoder, cache, inputs_embeds=torch.zeros((1, 2, model.config.hidden_size)))
    assert any("past_key_values" in f for f in found), found


def test_chat_and_eval_runs_emit_no_deprecation_warnings(tiny_ckpt, tmp_path_factory, tmp_path, capsys):
    from lisa.chat.cli import run_one
    from lisa.evaluation.cli import main as eval_main
    from lisa.inference.pipeline import LisaPipeline

    data = data_tree(tmp_path_factory)
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(img)
    with deprecations_from_lisa() as found:
        pipe = LisaPipeline.from_pretrained(tiny_ckpt, device="cpu", precision="fp32", max_new_tokens=6,
                                            progress=False)
        run_one(pipe, str(img), "Segment the box.", str(tmp_path / "vis"), as_json=True)
        pipe(np.asarray(Image.open(img)), "And now?", history=[("Segment the box.", "It is [SEG].")])
        for protocol in ("teacher", "generate"):
            assert eval_main(["--version", str(tiny_ckpt), "--dataset_dir", str(data), "--val_dataset",
                              "ReasonSeg|val", "--log_base_dir", str(tmp_path), "--exp_name", protocol,
                              "--precision", "fp32", "--workers", "0", "--protocol", protocol,
                              "--max_new_tokens", "4"]) == 0
    capsys.readouterr()
    assert not found, "\n".join(found)
