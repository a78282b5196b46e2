"""Reading tensors safely from .safetensors / .bin / .pth files and sharded folders.

``torch.load`` is only ever called with ``weights_only=True``: a pickle that needs arbitrary code is
refused with an explanation instead of being executed.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open

from .errors import CheckpointError

WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")


class SafetensorRef:
    """A tensor of a safetensors file, read only when ``load()`` is called (shape known up front)."""

    __slots__ = ("path", "key", "shape", "dtype")

    def __init__(self, path: Path, key: str, shape, dtype: str):
        self.path, self.key, self.shape, self.dtype = path, key, torch.Size(shape), dtype

    def load(self) -> torch.Tensor:
        try:
            with safe_open(str(self.path), framework="pt") as f:
                return f.get_tensor(self.key)
        except Exception as e:
            raise CheckpointError(f"{self.path}: cannot read tensor {self.key} ({e})") from e


def materialize(value) -> torch.Tensor:
    return value.load() if isinstance(value, SafetensorRef) else value


def _looks_like_torch_file(path: Path) -> bool:
    """A zip archive (torch.save since 1.6) or a pickle (protocol 2+ starts with 0x80; the legacy
    format too): a JSON or text file is neither."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def load_torch_file(path: str | Path, lazy: bool = False) -> dict:
    """A state dict from a file. With ``lazy``, safetensors values are :class:`SafetensorRef` and
    ``.bin``/``.pth`` zip files are memory-mapped, so nothing large is read yet."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                if lazy:
                    return {k: SafetensorRef(path, k, f.get_slice(k).get_shape(), f.get_slice(k).get_dtype())
                            for k in f.keys()}
                return {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own error types for truncated headers
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path}: not a checkpoint file (neither a safetensors file nor a PyTorch zip or "
                              "pickle); check the file name or the index that points at it")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: the file needs arbitrary Python objects to be unpickled, which could run "
            f"code. Only plain tensor state dicts are loaded (torch.load weights_only=True). "
            f"Convert it in a trusted environment to a state dict or safetensors. Detail: {str(e).splitlines()[0]}"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: cannot read the file; is it truncated or not a PyTorch checkpoint? "
                              f"({e})") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "module" in obj and isinstance(obj["module"], dict):
        obj = obj["module"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return obj


def read_weight_map(index: Path) -> dict[str, str]:
    """The ``weight_map`` of a sharded checkpoint's index: tensor name -> shard file name. Every shard
    must be a plain file name inside the index's folder (an index is data: it may not point at
    ``../../etc/passwd`` or an absolute path)."""
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CheckpointError(f"{index}: malformed index file ({e})") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in weight_map.items()):
        raise CheckpointError(f"{index}: malformed index file: 'weight_map' must be an object of tensor name -> "
                              f"shard file name, got {type(weight_map).__name__}")
    for shard in sorted(set(weight_map.values())):
        # a bare name (the shard may still be a symlink, as in the Hugging Face cache's snapshots)
        inside = Path(shard).name == shard and shard not in ("", ".", "..") and "\\" not in shard
        if not inside:
            raise CheckpointError(f"{index}: shard {shard!r} is not a file name inside {index.parent}; an index may "
                                  "only name shard files in its own folder")
    return weight_map


def weight_files(folder: str | Path) -> tuple[list[Path], Path | None]:
    """The weight files of a checkpoint folder (resolving an index) and the index file, if any."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder not found")
    for name in WEIGHT_INDEXES:
        index = folder / name
        if index.is_file():
            files = sorted(set(read_weight_map(index).values()))
            missing = [f for f in files if not (folder / f).is_file()]
            if missing:
                raise CheckpointError(f"{index}: lists shard(s) that do not exist: {', '.join(missing)}")
            return [folder / f for f in files], index
    for name in SINGLE_FILES:
        if (folder / name).is_file():
            return [folder / name], None
    found = sorted(p.name for p in folder.glob("*.safetensors")) + sorted(p.name for p in folder.glob("*.bin"))
    if found:
        return [folder / f for f in found if not f.startswith("training_args")], None
    raise CheckpointError(f"{folder}: no weights found (expected {', '.join(SINGLE_FILES)} or a sharded index)")


def read_folder(folder: str | Path, progress: bool = True, lazy: bool = False) -> tuple[dict, dict[str, Path]]:
    """All tensors of a checkpoint folder (lazy: see :func:`load_torch_file`) and each key's file."""
    from tqdm.auto import tqdm

    files, index = weight_files(folder)
    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    expected = None
    if index is not None:
        expected = read_weight_map(index)
    for path in tqdm(files, desc="Loading shards", disable=not progress or len(files) < 2, unit="shard"):
        part = load_torch_file(path, lazy=lazy)
        if expected is not None:
            want = {k for k, f in expected.items() if f == path.name}
            lacking = sorted(want - set(part))
            if lacking:
                raise CheckpointError(f"{path}: shard is missing keys that {index.name} assigns to it: "
                                      f"{', '.join(lacking[:5])}{' ...' if len(lacking) > 5 else ''} "
                                      "(wrong or truncated shard?)")
        for k, v in part.items():
            tensors[k] = v
            origin[k] = path
    return tensors, origin
