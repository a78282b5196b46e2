"""Load any supported checkpoint folder into ``LisaForSegmentation`` without network access.

Supported: released LISA folders (flat ``model_type: "llava"`` config, single/sharded ``.bin`` or
safetensors, mixed bf16/fp32, with or without CLIP weights), base LLaVA v1 / v1.5 folders, and the
folders this project writes. CLIP comes from the checkpoint, ``vision_tower=DIR`` or the config's
path (relative to the folder first); SAM from the checkpoint or an official ``.pth``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import CLIPVisionModel
from transformers.initialization import no_init_weights

from ..model.config import LisaConfig
from ..model.lisa import LisaForSegmentation
from ..precision import DTYPES, to_dtype
from .errors import CheckpointError, first
from .files import materialize, read_folder
from .layout import clip_config_from_tensors, lisa_to_internal
from .sam_keys import sam_config_for

log = logging.getLogger(__name__)

def read_config(folder: Path) -> LisaConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: config.json not found; is {folder} a LISA/LLaVA checkpoint folder?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: malformed JSON ({e})") from e
    try:
        return LisaConfig.from_lisa_json(data, str(path))
    except ValueError as e:
        raise CheckpointError(str(e)) from e


def _local_clip(ref: str, folder: Path) -> Path | None:
    for cand in (folder / ref, Path(ref).expanduser()):
        if cand.is_dir() and (cand / "config.json").is_file():
            return cand
    return None


def resolve_vision(cfg: LisaConfig, folder: Path, internal: dict, vision_tower: str | None):
    """Returns (CLIPVisionConfig dict, CLIP state dict in our names or None when in the checkpoint)."""
    ref = vision_tower or cfg.vision_tower
    has_weights = any(k.startswith("vision_tower.vision_tower.") for k in internal)
    clip_dir = _local_clip(ref, folder) if ref else None
    if vision_tower and clip_dir is None:
        raise CheckpointError(f"--vision-tower {vision_tower}: no folder with a config.json there")
    if clip_dir is not None:
        try:
            with _quiet():
                clip = CLIPVisionModel.from_pretrained(str(clip_dir), local_files_only=True)
        except Exception as e:  # transformers raises OSError/ValueError variants
            raise CheckpointError(f"{clip_dir}: cannot load a CLIP vision model from this folder ({e})") from e
        vcfg = clip.config.to_dict()
        weights = None if has_weights else {"vision_tower.vision_tower." + k: v for k, v in clip.state_dict().items()}
        return vcfg, weights
    if has_weights:
        vcfg = cfg.vision or clip_config_from_tensors(internal)
        return vcfg, None
    if ref:
        try:  # a hub name already present in the local Hugging Face cache
            with _quiet():
                clip = CLIPVisionModel.from_pretrained(ref, local_files_only=True)
            return clip.config.to_dict(), {"vision_tower.vision_tower." + k: v for k, v in clip.state_dict().items()}
        except Exception:
            pass
    raise CheckpointError(
        f"{folder}: the checkpoint has no CLIP vision-tower weights and the vision tower {ref!r} named in "
        "config.json was not found locally (no network access is used). Pass --vision-tower DIR with a "
        "local copy of the CLIP model (for LISA: openai/clip-vit-large-patch14).")


@contextlib.contextmanager
def _quiet():
    """transformers' own load report and progress bar would repeat what we check and show."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


def _check_shapes(model: torch.nn.Module, state: dict, origin: dict, folder: Path) -> None:
    expected = model.state_dict()
    bad = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items()
           if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        k, got, want = bad[0]
        where = origin.get(k, folder)
        raise CheckpointError(f"{where}: shape mismatch for {first(b[0] for b in bad)}; first: {k} has {got}, "
                              f"the model expects {want} (wrong config.json or a checkpoint of another size?)")


@dataclass
class CheckpointParts:
    """A checkpoint folder read but not yet turned into a model: its config (with the vision tower
    resolved), tokenizer and tensors in our parameter names, and the parts to initialise fresh."""

    folder: Path
    cfg: LisaConfig
    tokenizer: object
    tensors: dict  # as stored in the files (released names)
    internal: dict  # our parameter names
    origin: dict  # our name -> the file it came from
    ignored: list
    new_parts: list[str] = field(default_factory=list)


def read_checkpoint(path, *, vision_tower: str | None = None, model_max_length: int = 512,
                    progress: bool = True) -> CheckpointParts:
    from ..tokenization import load_tokenizer

    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    cfg = read_config(folder)
    tokenizer = load_tokenizer(folder, model_max_length=model_max_length)
    tensors, origin = read_folder(folder, progress=progress, lazy=True)
    internal, ignored = lisa_to_internal(tensors)
    origin = {k2: origin.get(k) for k, k2 in _renamed(tensors, internal)}

    vcfg, clip_weights = resolve_vision(cfg, folder, internal, vision_tower)
    cfg.vision = {k: v for k, v in vcfg.items() if k not in ("transformers_version", "architectures")}
    if vision_tower:
        cfg.vision_tower = vision_tower
    if clip_weights:
        internal.update(clip_weights)
    return CheckpointParts(folder, cfg, tokenizer, tensors, internal, origin, ignored)


def use_checkpoint_sam(parts: CheckpointParts, sam_config_file: str | None = None) -> bool:
    """Take SAM's config from the checkpoint's own SAM weights; False when it has none."""
    if not any(k.startswith("sam.") for k in parts.internal):
        return False
    official = {k[len("model.visual_model."):]: v for k, v in parts.tensors.items()
                if k.startswith("model.visual_model.")}
    beside = parts.folder / "sam_config.json"
    cfg_file = sam_config_file or (beside if beside.is_file() else None)
    parts.cfg.sam = sam_config_for(official, cfg_file, str(parts.folder)).to_dict()
    return True


def complete_seg_head(parts: CheckpointParts) -> None:
    """Mark the model as a LISA model; a [SEG] head the checkpoint lacks is made new, with SAM's
    prompt dimension as its output whatever ``--out_dim`` says."""
    if not any(k.startswith("text_hidden_fcs.") for k in parts.internal):
        parts.new_parts.append("text_hidden_fcs")
        parts.cfg.out_dim = int(parts.cfg.sam["prompt_encoder_config"]["hidden_size"])
    parts.cfg.has_seg_head = True


def instantiate(parts: CheckpointParts, precision=None, progress: bool = True) -> LisaForSegmentation:
    """The model of ``parts`` with its weights loaded (new parts initialised), in ``precision``."""
    from ..tokenization import seg_token_id

    cfg, folder, internal, origin = parts.cfg, parts.folder, parts.internal, parts.origin
    seg_id = seg_token_id(parts.tokenizer) if cfg.has_seg_head else None
    dtype = to_dtype(precision)
    # Parameters are allocated directly in the target dtype and never initialised (they are loaded
    # next), so a 7B/13B model costs its loaded size in memory, not an fp32 copy first.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype if dtype in DTYPES.values() else torch.float32)
    try:
        with no_init_weights():
            model = LisaForSegmentation(cfg, seg_token_id=seg_id)
    finally:
        torch.set_default_dtype(previous)
    for part in parts.new_parts:
        _initialise(getattr(model, part))
    _check_shapes(model, internal, origin, folder)
    expected = set(model.state_dict())
    missing = sorted(expected - set(internal) - _tied_keys(model) - _new_keys(expected, parts.new_parts))
    unexpected = sorted(set(internal) - expected)
    if missing:
        raise CheckpointError(f"{folder}: missing keys in the checkpoint: {first(missing)}")
    if unexpected:
        bad = [_lisa_name(k) for k in unexpected]
        where = origin.get(unexpected[0]) or folder
        raise CheckpointError(f"{where}: unexpected keys (not part of this model): {first(bad)}")
    if parts.ignored:
        log.info("ignored %d stale keys (e.g. %s)", len(parts.ignored), parts.ignored[0])
    _load_by_file(model, internal, origin, assign=dtype is None, progress=progress)
    if dtype is not None:
        model.to(dtype)
    return model


def load_pretrained(path, *, vision_tower: str | None = None, sam_config_file: str | None = None,
                    precision=None, device=None, quantization=None, model_max_length: int = 512,
                    progress: bool = True):
    """Load ``(model, tokenizer)`` from a checkpoint folder, as it is (a base LLaVA folder becomes a
    LLaVA model without [SEG]; turning it into a LISA model for training is ``lisa.train``'s job)."""
    parts = read_checkpoint(path, vision_tower=vision_tower, model_max_length=model_max_length, progress=progress)
    if parts.cfg.has_seg_head:
        if not use_checkpoint_sam(parts, sam_config_file):
            raise CheckpointError(f"{parts.folder}: a LISA checkpoint without SAM weights (model.visual_model.*)")
        complete_seg_head(parts)
    model, tokenizer = instantiate(parts, precision, progress), parts.tokenizer
    rows = model.llm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise CheckpointError(f"{parts.folder}: tokenizer has {len(tokenizer)} tokens but the embedding matrix "
                              f"has {rows} rows")
    model.eval()
    if quantization:
        from ..model.quantize import quantize_llm
        quantize_llm(model, quantization, device)
    elif device is not None:
        model.to(device)
    return model, tokenizer


def _load_by_file(model, internal: dict, origin: dict, assign: bool, progress: bool) -> None:
    """Copy weights in file by file, so that at most one shard is held in memory at a time."""
    from tqdm.auto import tqdm

    groups: dict = {}
    for k, v in internal.items():
        groups.setdefault(str(origin.get(k) or ""), {})[k] = v
    for _, part in tqdm(sorted(groups.items()), desc="Loading weights", disable=not progress or len(groups) < 3,
                        unit="file"):
        model.load_state_dict({k: materialize(v) for k, v in part.items()}, strict=False, assign=assign)


def _renamed(tensors, internal):
    # origin bookkeeping: map by identity of the tensor objects
    ids = {id(v): k for k, v in tensors.items()}
    return [(ids.get(id(v), ""), k) for k, v in internal.items()]


def _lisa_name(internal_key: str) -> str:
    from .layout import internal_to_lisa
    try:
        return next(iter(internal_to_lisa({internal_key: torch.empty(0)})))
    except (KeyError, StopIteration):
        return internal_key


def _tied_keys(model) -> set[str]:
    keys = set()
    if getattr(model.llm.config, "tie_word_embeddings", False):
        keys |= {"llm.lm_head.weight"}
    keys.add("sam.prompt_encoder.shared_embedding.positional_embedding")
    return keys


def _new_keys(expected: set[str], parts: list[str]) -> set[str]:
    return {k for k in expected for p in parts if k.startswith(p + ".")}


def _initialise(module: torch.nn.Module) -> None:
    if hasattr(module, "init_weights"):
        module.init_weights()
        return
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
