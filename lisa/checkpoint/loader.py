"""Load any supported checkpoint folder (or Hub id) into ``LisaForSegmentation``.

Supported: released LISA folders (flat ``model_type: "llava"`` config, single/sharded ``.bin`` or
safetensors, mixed bf16/fp32, with or without CLIP weights), base LLaVA v1 / v1.5 folders, and the
folders this project writes. CLIP comes from the checkpoint, ``vision_tower=DIR`` or the config's
path (relative to the folder first), else the Hub id it names; SAM from the checkpoint or an
official ``.pth``. Hub ids go through :mod:`lisa.checkpoint.hub` (the user's cache first).
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
from ..model.vision_siglip import is_siglip
from ..precision import DTYPES, to_dtype
from .errors import CheckpointError, first
from .files import materialize, read_folder
from .hub import parse_hub_id, resolve_model
from .layout import clip_config_from_tensors, lisa_to_internal
from .llava_hf import is_llava_hf, lisa_fields, llava_hf_to_internal
from .sam_keys import sam_config_for

log = logging.getLogger(__name__)

BESIDE_TOWER = "vision_tower"  # the vision tower folder that exports write next to the weights


def read_config(folder: Path) -> LisaConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: config.json not found; is {folder} a LISA/LLaVA checkpoint folder?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: malformed JSON ({e})") from e
    try:
        if is_llava_hf(data):
            cfg = LisaConfig(**lisa_fields(data, str(path)))
            if _pads_images(folder):
                cfg.extra["image_aspect_ratio"] = "pad"
            return cfg
        return LisaConfig.from_lisa_json(data, str(path))
    except ValueError as e:
        raise CheckpointError(str(e)) from e


def _pads_images(folder: Path) -> bool:
    """A llava-hf folder whose image processor pads to a square (LLaVA-1.5's "pad")."""
    for name in ("preprocessor_config.json", "processor_config.json"):
        try:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        data = data.get("image_processor", data) if isinstance(data, dict) else {}
        if isinstance(data, dict) and data.get("do_pad"):
            return True
    return False


def _is_llava_hf_folder(folder: Path) -> bool:
    try:
        return is_llava_hf(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return False


def _local_clip(ref: str, folder: Path) -> Path | None:
    for cand in (folder / ref, Path(ref).expanduser()):
        if cand.is_dir() and (cand / "config.json").is_file():
            return cand
    return None


def _vision_class(where) -> type:
    """SiglipVisionModel for a SigLIP folder (by its config.json), else CLIPVisionModel."""
    from transformers import SiglipVisionModel

    try:
        data = json.loads((Path(where) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return CLIPVisionModel
    return SiglipVisionModel if is_siglip(data) else CLIPVisionModel


def resolve_vision(cfg: LisaConfig, folder: Path, internal: dict, vision_tower: str | None, progress: bool = True):
    """Returns (vision config dict, tower state dict in our names or None when in the checkpoint).

    CLIP comes from ``vision_tower`` or the config's name: a folder (relative to the checkpoint
    first), else a Hub id such as ``openai/clip-vit-large-patch14``, fetched only when the
    checkpoint does not carry the CLIP weights itself or ``--vision-tower`` asks for it. CLIP and
    SigLIP towers are recognised by their folder's config.json."""
    ref = vision_tower or cfg.vision_tower
    has_weights = any(k.startswith("vision_tower.vision_tower.") for k in internal)
    clip_dir = _local_clip(ref, folder) if ref else None
    if clip_dir is None and not vision_tower and not has_weights:
        # `lisa export --format lisa/llava` ships the tower beside the weights, whatever config.json names
        clip_dir = _local_clip(BESIDE_TOWER, folder)
    if clip_dir is None and ref and (vision_tower or not has_weights) and parse_hub_id(ref):
        clip_dir = resolve_model(ref, progress=progress)
    if vision_tower and clip_dir is None:
        raise CheckpointError(f"--vision-tower {vision_tower}: no folder with a config.json there, nor a Hub id")
    if clip_dir is not None:
        kind = _vision_class(clip_dir)
        try:
            with _quiet():
                clip = kind.from_pretrained(str(clip_dir), local_files_only=True)
        except Exception as e:  # transformers raises OSError/ValueError variants
            raise CheckpointError(f"{clip_dir}: cannot load a vision model ({kind.__name__}) from this folder "
                                  f"({e})") from e
        vcfg = clip.config.to_dict()
        weights = None if has_weights else {"vision_tower.vision_tower." + k: v for k, v in clip.state_dict().items()}
        return vcfg, weights
    if has_weights:
        vcfg = cfg.vision or clip_config_from_tensors(internal)
        return vcfg, None
    raise CheckpointError(
        f"{folder}: the checkpoint has no CLIP vision-tower weights and the vision tower {ref!r} named in "
        "config.json is neither a folder here nor a Hub id. Pass --vision-tower with a local CLIP folder "
        "or a Hub id (for LISA: openai/clip-vit-large-patch14).")


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
                    progress: bool = True, revision: str | None = None) -> CheckpointParts:
    """Read a checkpoint folder or a Hub id (``owner/name[@revision]``, see :mod:`lisa.checkpoint.hub`;
    ``revision`` may also be given here)."""
    from ..tokenization import load_tokenizer

    folder = resolve_model(path, revision=revision, progress=progress)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    cfg = read_config(folder)
    tokenizer = load_tokenizer(folder, model_max_length=model_max_length)
    tensors, origin = read_folder(folder, progress=progress, lazy=True)
    internal, ignored = (llava_hf_to_internal(tensors) if _is_llava_hf_folder(folder)
                         else lisa_to_internal(tensors))
    origin = {k2: origin.get(k) for k, k2 in _renamed(tensors, internal)}

    vcfg, clip_weights = resolve_vision(cfg, folder, internal, vision_tower, progress)
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
                    progress: bool = True, revision: str | None = None):
    """Load ``(model, tokenizer)`` from a checkpoint folder or a Hub id, as it is (a base LLaVA folder
    becomes a LLaVA model without [SEG]; turning it into a LISA model for training is ``lisa.train``'s job)."""
    parts = read_checkpoint(path, vision_tower=vision_tower, model_max_length=model_max_length, progress=progress,
                            revision=revision)
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
