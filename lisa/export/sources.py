"""What ``lisa export`` (and ``lisa eval --resume``) can read, turned into a merged in-memory model.

Sources: a run folder (``runs/<exp>``, which records the model config, LoRA settings and
tokenizer), a DeepSpeed checkpoint folder (``ckpt_model`` or one ``global_step*`` tag, ours or the
original's), or a consolidated state dict (``pytorch_model.bin``, shards with an index, safetensors;
ours or the original's ``zero_to_fp32`` output). Sources without a run folder need ``version``:
the base LLaVA (or LISA) folder the training started from.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint.errors import CheckpointError
from ..checkpoint.run_folder import (
    BEST,
    CKPT_DIR,
    LATEST,
    RUN_MODEL_FILE,
    TAG_RE,
    TOKENIZER_DIR,
    is_complete,
    is_run_dir,
    locate,
    read_marker,
    run_dir_near,
)
from .merge import consolidate, to_internal

log = logging.getLogger("lisa.export")


@dataclass
class Source:
    kind: str  # "run" | "deepspeed" | "state_dict"
    path: Path
    ckpt_dir: Path | None = None
    tag: str | None = None
    run_dir: Path | None = None


def _ds_tag(folder: Path, tag: str | None) -> tuple[Path, str] | None:
    """(ckpt_dir, tag) of any DeepSpeed checkpoint folder (also ones without our markers)."""
    if TAG_RE.match(folder.name) and any(folder.glob("*model_states.pt")):
        return folder.parent, folder.name
    if tag in (BEST, LATEST):
        found = read_marker(folder, tag)
        if found is None and tag == LATEST and (folder / LATEST).is_file():
            found = (folder / LATEST).read_text().strip()
        return (folder, found) if found else None
    if tag:
        return (folder, tag) if (folder / tag).is_dir() else None
    ours = locate(folder)
    best = read_marker(folder, BEST)
    if best:
        return folder, best
    if ours:
        return ours
    if (folder / LATEST).is_file():
        return folder, (folder / LATEST).read_text().strip()
    tags = sorted((int(m.group(1)), p.name) for p in folder.iterdir() if (m := TAG_RE.match(p.name)))
    return (folder, tags[-1][1]) if tags else None


def resolve(source, tag: str | None = None) -> Source:
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path}: export source not found")
    if path.is_file():
        return Source("state_dict", path, run_dir=run_dir_near(path.parent))
    if (path / CKPT_DIR).is_dir():
        found = _ds_tag(path / CKPT_DIR, tag)
        if found is None:
            raise CheckpointError(f"{path / CKPT_DIR}: no DeepSpeed checkpoint{f' with tag {tag}' if tag else ''}")
        return Source("run" if is_run_dir(path) else "deepspeed", path, *found,
                      run_dir=path if is_run_dir(path) else None)
    found = _ds_tag(path, tag)
    if found is not None:
        return Source("deepspeed", path, *found, run_dir=run_dir_near(found[0]))
    if any(path.glob("pytorch_model*.bin")) or any(path.glob("*.safetensors")) or any(path.glob("*.pt")):
        return Source("state_dict", path, run_dir=run_dir_near(path))
    raise CheckpointError(f"{path}: not a run folder, a DeepSpeed checkpoint or a state dict "
                          "(pytorch_model.bin, shards with an index, safetensors)")


def read_state(src: Source, progress: bool = True) -> dict[str, torch.Tensor]:
    from ..checkpoint.files import load_torch_file, read_folder

    if src.kind in ("run", "deepspeed"):
        tag_dir = src.ckpt_dir / src.tag
        if not tag_dir.is_dir():
            raise CheckpointError(f"{tag_dir}: checkpoint tag folder not found")
        if src.kind == "run" and not is_complete(tag_dir):
            raise CheckpointError(f"{tag_dir}: incomplete checkpoint (the run was stopped while saving it)")
        log.info("consolidating %s", tag_dir)
        return consolidate(src.ckpt_dir, src.tag)
    if src.path.is_file():
        return load_torch_file(src.path)
    tensors, _ = read_folder(src.path, progress=progress)
    return tensors


# ---- the model skeleton ---------------------------------------------------------------------

def _run_skeleton(run_dir: Path):
    from ..model.config import LisaConfig
    from ..tokenization import load_tokenizer

    info = json.loads((run_dir / RUN_MODEL_FILE).read_text(encoding="utf-8"))
    cfg = LisaConfig(**info["lisa_config"])
    tokenizer = load_tokenizer(run_dir / TOKENIZER_DIR, model_max_length=512)
    return cfg, tokenizer, info.get("seg_token_id"), float(info["lora"]["alpha"]), info


QUANT_STATE = (".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".SCB", ".weight_format")


def unquantize_from_base(state: dict, base: str | Path, bits: int) -> dict:
    """A QLoRA run (``--bits 4/8``) keeps its frozen LLM layers packed by bitsandbytes; those weights
    never changed, so they are taken in full precision from the base folder the run started from."""
    from ..checkpoint.files import materialize, read_folder
    from ..checkpoint.hub import resolve_model
    from ..checkpoint.layout import lisa_to_internal

    try:
        folder = resolve_model(base, progress=False)  # a folder, or the Hub id the run started from
    except CheckpointError as e:
        raise CheckpointError(f"the run trained a {bits}-bit LLM, whose frozen weights come from its base model "
                              f"{str(base)!r}, which is not there ({e}): pass --version BASE_DIR") from e
    packed = [k for k, v in state.items() if k.startswith("llm.") and k.endswith(".weight")
              and not v.is_floating_point()]
    tensors, _ = read_folder(folder, progress=False, lazy=True)
    base_state, _ = lisa_to_internal(tensors)
    out = {k: v for k, v in state.items() if not (".quant_state." in k or k.endswith(QUANT_STATE))}
    for key in packed:
        plain = key.replace(".base_layer.weight", ".weight")
        if plain not in base_state:
            raise CheckpointError(f"{folder}: no weight {plain} for the {bits}-bit layer {key} of the run")
        out[key] = materialize(base_state[plain]).float()
    log.info("%d-bit run: %d frozen LLM weights taken from %s", bits, len(packed), folder)
    return out


def _base_skeleton(version: str, internal: dict, vision_tower, sam_config, use_mm_start_end: bool):
    """Config + tokenizer for a state dict trained from the base folder ``version`` (original flow)."""
    from ..checkpoint.hub import resolve_model
    from ..checkpoint.loader import read_config, resolve_vision
    from ..checkpoint.sam_keys import hf_to_official, sam_config_for
    from ..tokenization import add_lisa_tokens, load_tokenizer, seg_token_id

    folder = resolve_model(version)  # a folder, or a Hub id (owner/name[@revision])
    cfg = read_config(folder)
    tokenizer = load_tokenizer(folder)
    vcfg, clip_weights = resolve_vision(cfg, folder, internal, vision_tower)
    cfg.vision = {k: v for k, v in vcfg.items() if k not in ("transformers_version", "architectures")}
    if clip_weights:
        internal.update(clip_weights)
    sam = {k[4:]: v for k, v in internal.items() if k.startswith("sam.")}
    seg_id = None
    if sam_config is None and (folder / "sam_config.json").is_file():
        sam_config = folder / "sam_config.json"
    if sam:
        cfg.sam = sam_config_for(hf_to_official(sam), sam_config, "SAM weights of the checkpoint").to_dict()
        cfg.has_seg_head = True
        head = internal.get("text_hidden_fcs.0.2.weight")
        if head is not None:
            cfg.out_dim = int(head.shape[0])
        add_lisa_tokens(tokenizer, use_mm_start_end)
        cfg.mm_use_im_start_end = use_mm_start_end
        seg_id = seg_token_id(tokenizer)
    embed = internal.get("llm.model.embed_tokens.weight")
    if embed is not None:
        cfg.llm["vocab_size"] = int(embed.shape[0])
    return cfg, tokenizer, seg_id


def _run_bits(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / RUN_MODEL_FILE).read_text(encoding="utf-8")).get("bits", 16))
    except (OSError, ValueError):
        return 16


def build(cfg, seg_id, internal: dict):
    from transformers.initialization import no_init_weights

    from ..model.lisa import LisaForSegmentation

    with no_init_weights():
        model = LisaForSegmentation(cfg, seg_token_id=seg_id)
    expected = model.state_dict()
    shared = {"sam.prompt_encoder.shared_embedding.positional_embedding"}
    if getattr(model.llm.config, "tie_word_embeddings", False):
        shared.add("llm.lm_head.weight")
    missing = sorted(set(expected) - set(internal) - shared)
    unexpected = sorted(set(internal) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"the merged weights do not fit the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    bad = [k for k, v in internal.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        raise CheckpointError(f"shape mismatch for {bad[:3]}: e.g. {bad[0]} is {tuple(internal[bad[0]].shape)}, "
                              f"the model expects {tuple(expected[bad[0]].shape)}")
    model.load_state_dict(internal, strict=False, assign=True)
    return model.eval()


def load_merged(source, *, version: str | None = None, tag: str | None = None, lora_alpha: float | None = None,
                vision_tower: str | None = None, sam_config: str | None = None, use_mm_start_end: bool = True,
                progress: bool = True):
    """(model with LoRA merged, tokenizer, info dict) from any supported source."""
    src = resolve(source, tag)
    log.info("source: %s (%s%s)", src.path, src.kind, f", checkpoint {src.tag}" if src.tag else "")
    state = read_state(src, progress)
    info = {"source": str(src.path), "kind": src.kind, "tag": src.tag, "precision": None}
    # a run folder describes its model itself; ``version`` then only says where its base is (QLoRA runs)
    if src.run_dir is not None and (version is None or src.kind == "run" or _run_bits(src.run_dir) != 16):
        cfg, tokenizer, seg_id, alpha, run_info = _run_skeleton(src.run_dir)
        info["precision"] = run_info.get("precision")
        bits = int(run_info.get("bits", 16))
        if bits != 16:
            state = unquantize_from_base(state, version or run_info["base"], bits)
        internal = to_internal(state, lora_alpha if lora_alpha is not None else alpha, progress)
    else:
        if version is None:
            raise CheckpointError(f"{src.path}: no run folder with {RUN_MODEL_FILE} around it; pass --version "
                                  "BASE_DIR (the LLaVA / LISA folder the training started from)")
        internal = to_internal(state, 16.0 if lora_alpha is None else lora_alpha, progress)
        cfg, tokenizer, seg_id = _base_skeleton(version, internal, vision_tower, sam_config, use_mm_start_end)
    del state
    return build(cfg, seg_id, internal), tokenizer, info

