"""Read the Q-Former and its learned query tokens out of a BLIP-2 folder in the Hugging Face layout.

Such a folder (``Salesforce/blip2-opt-2.7b`` and its siblings) has a ``config.json`` with a
``qformer_config`` and weights holding ``qformer.*`` and ``query_tokens`` beside the vision model and
the language model. Only those two groups are read (safetensors lazily; ``.bin`` with
``weights_only=True``), so a multi-gigabyte BLIP-2 costs the Q-Former's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ...checkpoint.errors import CheckpointError
from .sources import SourceError, local_folder, read_json_object

BLIP2_DEFAULT = "Salesforce/blip2-opt-2.7b"
QFORMER_PREFIX = "qformer."
QUERY_TOKENS = "query_tokens"
# The text-input embeddings of the Q-Former (BLIP-2's image-text matching); the detector feeds only
# query tokens, so they are not part of it.
UNUSED_PREFIXES = ("embeddings.",)


@dataclass
class Blip2QFormerWeights:
    folder: Path
    config: dict  # Blip2QFormerConfig fields
    state: dict[str, torch.Tensor]  # Blip2QFormerModel state dict
    query_tokens: torch.Tensor  # [1, num_query_tokens, hidden]


def resolve_blip2(source: str) -> Path:
    ref = BLIP2_DEFAULT if source == "blip2" else source
    return local_folder(ref, "BLIP-2", " (or --qformer_pretrained none for a random Q-Former)")


def load_blip2_qformer(source: str) -> Blip2QFormerWeights:
    from ...checkpoint.files import materialize, read_folder

    folder = resolve_blip2(source)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise SourceError(f"{folder}: not a BLIP-2 folder (no config.json)")
    data = read_json_object(cfg_path)
    qcfg = data.get("qformer_config")
    if not isinstance(qcfg, dict):
        kind = data.get("model_type")
        raise SourceError(f"{cfg_path}: not a BLIP-2 folder (no qformer_config; model_type {kind!r})")
    try:
        tensors, _ = read_folder(folder, progress=False, lazy=True)
    except CheckpointError as e:
        raise SourceError(f"{folder}: cannot read the BLIP-2 weights ({e})") from e
    state = {k[len(QFORMER_PREFIX):]: v for k, v in tensors.items() if k.startswith(QFORMER_PREFIX)}
    state = {k: materialize(v) for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
    if not state or QUERY_TOKENS not in tensors:
        lacking = [n for n, ok in (("qformer.*", bool(state)), (QUERY_TOKENS, QUERY_TOKENS in tensors)) if not ok]
        raise SourceError(f"{folder}: not a BLIP-2 checkpoint: no {' and no '.join(lacking)} tensors in its weights")
    tokens = materialize(tensors[QUERY_TOKENS]).float()
    if tokens.dim() != 3 or tokens.shape[0] != 1:
        raise SourceError(f"{folder}: query_tokens has shape {tuple(tokens.shape)}, expected [1, queries, width]")
    config = {k: v for k, v in qcfg.items() if k not in ("transformers_version", "architectures", "_name_or_path")}
    hidden = int(config.get("hidden_size", 768))
    if tokens.shape[-1] != hidden:
        raise SourceError(f"{folder}: query_tokens width {tokens.shape[-1]} differs from the Q-Former's "
                          f"hidden_size {hidden}")
    return Blip2QFormerWeights(folder, config, {k: v.float() for k, v in state.items()}, tokens)
