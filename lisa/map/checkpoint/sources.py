"""Where the pretrained parts come from: local folders only (a path, or a Hugging Face name already
in the local cache). Each loader fails with a message that names the folder and what is wrong.

- LLM: any folder ``AutoModelForCausalLM`` loads, or a LLaVA / LISA checkpoint folder (its LLaMA
  weights are read with the project's checkpoint layout; CLIP, projector and SAM are skipped).
- Vision tower: a CLIP (or CLIP vision) folder.
- Tokenizer: the LLM folder's, or ``bytes`` (``model/text.py``; the tiny preset, which has no trained
  vocabulary).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ...checkpoint.errors import CheckpointError

log = logging.getLogger("lisa.map")


class SourceError(ValueError):
    """A pretrained part that cannot be loaded; the message names the folder."""


def local_folder(ref: str, what: str, hint: str = "") -> Path:
    """A folder path as given, else the local Hugging Face cache's snapshot of that repo name."""
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise SourceError(f"{ref}: the {what} must be a folder, this is a file")
    looks_like_repo = ref.count("/") == 1 and not ref.startswith((".", "/", "~"))
    if looks_like_repo:
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(ref, local_files_only=True))
        except Exception:  # not cached (LocalEntryNotFoundError) or a malformed name
            pass
    raise SourceError(f"{ref}: {what} folder not found (nothing is downloaded; give a local folder"
                      f"{' or put ' + ref + ' into the Hugging Face cache' if looks_like_repo else ''}){hint}")


def read_json_object(path: Path) -> dict:
    """A JSON file holding an object, or a SourceError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise SourceError(f"{path}: malformed JSON ({e})") from e
    if not isinstance(data, dict):
        raise SourceError(f"{path}: expected a JSON object")
    return data


def is_llava_folder(folder: Path) -> bool:
    cfg = folder / "config.json"
    if not cfg.is_file():
        return False
    data = read_json_object(cfg)
    return data.get("model_type") in ("llava", "llava_llama", "LISA") or "mm_vision_tower" in data


def build_llm_from_config(llm: dict, dtype: torch.dtype | None = None) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    data = dict(llm)
    model_type = data.pop("model_type", "llama")
    config = AutoConfig.for_model(model_type, **data)
    model = AutoModelForCausalLM.from_config(config)
    return model.to(dtype) if dtype is not None else model


def _llava_llm(folder: Path, dtype: torch.dtype | None) -> torch.nn.Module:
    """The LLaMA inside a LLaVA / LISA folder, without building CLIP or SAM."""
    from transformers.initialization import no_init_weights

    from ...checkpoint.files import materialize, read_folder
    from ...checkpoint.layout import lisa_to_internal
    from ...model.config import LisaConfig

    try:
        cfg = LisaConfig.from_lisa_json(read_json_object(folder / "config.json"), str(folder / "config.json"))
        tensors, _ = read_folder(folder, progress=False, lazy=True)
    except (CheckpointError, ValueError) as e:
        raise SourceError(f"{folder}: cannot read the LLaVA / LISA checkpoint ({e})") from e
    internal, _ = lisa_to_internal(tensors)
    state = {k[len("llm."):]: v for k, v in internal.items() if k.startswith("llm.")}
    with no_init_weights():
        model = build_llm_from_config(cfg.llm, dtype)
    expected = set(model.state_dict())
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    missing = sorted(expected - set(state) - tied)
    if missing:
        raise SourceError(f"{folder}: the LLaVA / LISA checkpoint lacks LLM weights: {', '.join(missing[:5])}")
    model.load_state_dict({k: materialize(v) for k, v in state.items() if k in expected}, strict=False)
    return model.to(dtype) if dtype is not None else model


def load_llm(ref: str, dtype: torch.dtype | None = None) -> torch.nn.Module:
    folder = local_folder(ref, "LLM", " (or use --preset tiny for a small random LLM)")
    if is_llava_folder(folder):
        log.info("reading the LLM of the LLaVA / LISA checkpoint %s", folder)
        return _llava_llm(folder, dtype)
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    except Exception as e:  # transformers raises OSError / ValueError / KeyError variants
        raise SourceError(f"{folder}: this folder does not load as a causal LM ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); --llm_path needs a LLaMA / Vicuna / "
                          "LLaVA / LISA checkpoint folder with config.json and weights") from e


def load_vision(ref: str, dtype: torch.dtype | None = None):
    from transformers import CLIPVisionModel

    folder = local_folder(ref, "CLIP vision tower")
    try:
        return CLIPVisionModel.from_pretrained(str(folder), local_files_only=True, dtype=dtype)
    except Exception as e:
        raise SourceError(f"{folder}: cannot load a CLIP vision model from this folder ({e})") from e


def load_text_tokenizer(kind: str, llm_ref: str | None):
    if kind == "bytes":
        from ..model.text import ByteTokenizer

        return ByteTokenizer()
    if not llm_ref:
        raise SourceError("tokenizer 'auto' needs an LLM folder (llm_path); the tiny preset uses 'bytes'")
    from ...tokenization import load_tokenizer

    folder = local_folder(llm_ref, "LLM")
    try:
        return load_tokenizer(folder)
    except Exception as e:
        raise SourceError(f"{folder}: no usable tokenizer in the LLM folder ({e})") from e
