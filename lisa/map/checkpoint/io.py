"""Saving and loading a trained map detector folder.

A folder holds ``config.json`` (``MapDetectorConfig``) and ``model.safetensors``. The trained parts
(Q-Former, projection, map queries, decoder) are always in the file; the LLM and the vision tower
only when they cannot be read again from their own folders (random parts of the tiny preset, an LLM
changed by stage 3), so a 7B checkpoint costs the trained parts' size, not 14 GB per epoch.
A ``.pth`` file with a ``model_state_dict`` (what the LLaVA map fork saves) is read with
``weights_only=True`` into the same names.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..model.config import MapDetectorConfig
from ..model.detector import TRAINED_PARTS, MapDetector
from .build import build_from_config

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class DetectorCheckpointError(ValueError):
    """A map detector folder or file that cannot be loaded; the message names it."""


def _part(key: str) -> str:
    return key.split(".", 1)[0]


def parts_to_save(model: MapDetector) -> set[str]:
    parts = set(TRAINED_PARTS)
    cfg = model.config
    if not cfg.vision_path or any(p.requires_grad for p in model.vision.parameters()):
        parts.add("vision")
    if not cfg.llm_path or any(p.requires_grad for p in model.llm.parameters()):
        parts.add("llm")
    return parts


def detector_state(model: MapDetector) -> dict[str, torch.Tensor]:
    parts = parts_to_save(model)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if _part(k) in parts}
    if model.config.llm_lora and model.config.llm_path:  # the base LLM is read again from its folder
        state = {k: v for k, v in state.items() if _part(k) != "llm" or "lora_" in k}
    if getattr(model.llm.config, "tie_word_embeddings", False):
        state.pop("llm.lm_head.weight", None)
    return state


def save_detector(model: MapDetector, folder, extra_config: dict | None = None) -> Path:
    """Write ``folder/config.json`` and ``folder/model.safetensors`` (tensors cloned: shared storage
    such as tied embeddings is refused by safetensors)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.clone() for k, v in detector_state(model).items()}
    tmp = folder / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": "lisa-map-detector"})
    tmp.replace(folder / WEIGHTS)
    model.config.save(folder / CONFIG)
    return folder


def read_state_file(path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise DetectorCheckpointError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:
            raise DetectorCheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise DetectorCheckpointError(f"{path}: refused: the file needs arbitrary Python objects to be unpickled "
                                      "(only tensors and plain containers are read, weights_only=True)") from e
    except (RuntimeError, EOFError, OSError) as e:
        raise DetectorCheckpointError(f"{path}: cannot read the file ({e})") from e
    if isinstance(obj, dict) and isinstance(obj.get("model_state_dict"), dict):
        obj = obj["model_state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DetectorCheckpointError(f"{path}: expected a state dict of tensors (or a dict with model_state_dict)")
    # data-parallel wrappers save "module."-prefixed names
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def load_state(model: MapDetector, state: dict[str, torch.Tensor], where: str) -> None:
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    if unexpected:
        raise DetectorCheckpointError(f"{where}: unexpected keys (not part of this detector): {unexpected[:5]}")
    bad = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items() if v.shape != expected[k].shape]
    if bad:
        k, got, want = bad[0]
        raise DetectorCheckpointError(f"{where}: {k} has shape {got}, the detector expects {want} "
                                      "(a checkpoint of another preset or config?)")
    present = {_part(k) for k in state}
    lacking = [p for p in TRAINED_PARTS if p not in present]
    if lacking:
        raise DetectorCheckpointError(f"{where}: no weights for the detector's {', '.join(lacking)}")
    cfg = model.config
    for part, source in (("vision", cfg.vision_path), ("llm", cfg.llm_path)):
        if part not in present and not source:
            raise DetectorCheckpointError(f"{where}: no {part} weights and no {part} folder in the config")
    tied = {"llm.lm_head.weight"} if getattr(model.llm.config, "tie_word_embeddings", False) else set()
    lora_only = bool(cfg.llm_lora and cfg.llm_path)
    missing = sorted(k for k in expected if _part(k) in present and k not in state and k not in tied
                     and not (lora_only and _part(k) == "llm" and "lora_" not in k))
    if missing:
        raise DetectorCheckpointError(f"{where}: missing keys: {missing[:5]}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)


def load_detector(folder, *, dtype: torch.dtype | None = None, device=None, weights: str | None = None,
                  freeze_llm: bool = True) -> MapDetector:
    """A detector folder written by :func:`save_detector` (``weights`` overrides the weights file,
    e.g. a fork's ``.pth``). Frozen parts not in the file are read from the config's folders."""
    folder = Path(folder)
    if folder.is_file():
        raise DetectorCheckpointError(f"{folder}: expected a checkpoint folder (config.json + {WEIGHTS})")
    if not (folder / CONFIG).is_file():
        raise DetectorCheckpointError(f"{folder}: not a map detector checkpoint (no {CONFIG})")
    try:
        config = MapDetectorConfig.load(folder / CONFIG)
    except ValueError as e:
        raise DetectorCheckpointError(str(e)) from e
    model = build_from_config(config, freeze_llm=freeze_llm, dtype=dtype, load_qformer=False)
    path = Path(weights) if weights else folder / WEIGHTS
    load_state(model, read_state_file(path), str(path))
    model.eval()
    return model.to(device) if device is not None else model
