"""Write a model folder: our format (safetensors, CLIP included) or the released LISA layout (.bin shards)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .layout import internal_to_lisa

GENERATION_CONFIG = {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


def _shard(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards, current, size = [], {}, 0
    for k, v in state.items():
        n = v.numel() * v.element_size()
        if current and size + n > max_bytes:
            shards.append(current)
            current, size = {}, 0
        current[k] = v
        size += n
    if current or not shards:
        shards.append(current)
    return shards


def _parse_size(size) -> int:
    if isinstance(size, int):
        return size
    s = str(size).upper().strip()
    for unit, mult in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if s.endswith(unit):
            return int(float(s[:-2]) * mult)
    return int(s)


def save_pretrained(model, tokenizer, out, *, format: str = "native", max_shard_size="10GB",
                    progress: bool = True) -> Path:
    """``format="native"``: safetensors with every part (CLIP too) and an exact round trip.
    ``format="lisa"``: the layout of the released checkpoints (config.json, ``pytorch_model*.bin``,
    tokenizer), without CLIP weights; the CLIP folder is written beside as ``vision_tower/``."""
    if format not in ("native", "lisa"):
        raise ValueError(f"unknown format {format!r}; use 'native' or 'lisa'")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    internal = {k: v.detach().contiguous() for k, v in model.state_dict().items()
                if k != "sam.prompt_encoder.shared_embedding.positional_embedding"}
    if getattr(model.llm.config, "tie_word_embeddings", False):
        internal.pop("llm.lm_head.weight", None)
    state = internal_to_lisa(internal, include_vision=(format == "native"))
    tower_ref = None
    if format == "lisa":
        tower_ref = "vision_tower"
        model.vision_tower.vision_tower.save_pretrained(out / "vision_tower")
    config = cfg.to_lisa_json(vision_tower_ref=tower_ref or cfg.vision_tower)
    config["torch_dtype"] = str(model.llm.get_input_embeddings().weight.dtype).replace("torch.", "")
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2))
    if cfg.has_seg_head and cfg.sam is not None:
        (out / "sam_config.json").write_text(json.dumps(cfg.sam, indent=2, default=str))
    for old in list(out.glob("model*.safetensors")) + list(out.glob("pytorch_model*.bin")) + \
            list(out.glob("*.index.json")):
        old.unlink()
    shards = _shard(state, _parse_size(max_shard_size))
    ext, stem = (".safetensors", "model") if format == "native" else (".bin", "pytorch_model")
    names = [f"{stem}{ext}"] if len(shards) == 1 else \
        [f"{stem}-{i + 1:05d}-of-{len(shards):05d}{ext}" for i in range(len(shards))]
    weight_map = {}
    for name, shard in tqdm(list(zip(names, shards)), desc="Writing shards", disable=not progress or len(shards) < 2):
        if format == "native":
            save_file(shard, str(out / name), metadata={"format": "pt"})
        else:
            torch.save(shard, out / name)
        weight_map.update({k: name for k in shard})
    if len(shards) > 1:
        total = sum(v.numel() * v.element_size() for v in state.values())
        index_name = f"{stem}{ext}.index.json"
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / index_name).write_text(json.dumps(index, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
    return out
