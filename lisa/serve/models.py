"""Which models a server runs: ``--models`` specs and models files.

A spec is a model folder (or hub id), optionally followed by ``:`` and ``key=value`` pairs separated
by commas, e.g. ``ckpt/lisa-7b:name=lisa,precision=bf16,replicas=2`` or ``llava-1.5:quant=4bit``.
Keys: ``name`` (default: the folder's name), ``precision`` (fp32, bf16, fp16), ``quant`` (4bit,
8bit), ``replicas``, ``num_gpus`` and ``num_cpus`` (per replica, under Ray Serve; fractions allowed),
``max_queue``, ``device``, ``conv_type``, ``vision_tower``, ``sam_config``, ``model_max_length``,
``revision`` (of a Hub id; ``owner/name@revision`` works too), ``max_masks`` (per answer),
``no_compile`` (true: eager on CUDA), ``model_base`` (the base model when the path is a LoRA folder:
LLaVA's adapter folder or a ``lisa train`` run, applied in memory as ``--model-base`` does).
A models file (``.json``, or ``.yaml`` when PyYAML is installed) holds a list of objects with
``path`` and the same keys (or ``{"models": [...]}``); relative paths are taken from the file's folder.
Keys a spec leaves out come from the command's flags (``--precision``, ``--load_in_4bit``, ...).
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..inference.limits import MAX_MASKS

PRECISIONS = ("fp32", "bf16", "fp16")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
_OPTS_RE = re.compile(r"^(?P<path>.+?):(?P<opts>[a-z_][a-z0-9_]*=[^,]*(?:,[a-z_][a-z0-9_]*=[^,]*)*)$")


@dataclass
class ModelSpec:
    path: str
    name: str = ""
    precision: str | None = None
    quant: str | None = None  # "4bit" | "8bit"
    replicas: int | None = None
    num_gpus: float | None = None
    num_cpus: float | None = None
    max_queue: int | None = None
    device: str | None = None
    conv_type: str | None = None
    vision_tower: str | None = None
    sam_config: str | None = None
    model_max_length: int | None = None
    revision: str | None = None  # of a Hub id (or write owner/name@revision)
    no_compile: bool | None = None  # on CUDA: eager decoding, uncompiled SAM/CLIP (lisa serve --no_compile)
    max_masks: int | None = None  # masks decoded per answer
    model_base: str | None = None  # the base model when ``path`` is a LoRA folder

    def __post_init__(self):
        where = f"model {self.path!r}"
        if not self.name:
            local = Path(self.path)
            self.name = local.name if local.exists() else self.path.split("@", 1)[0]
        if not NAME_RE.match(self.name):
            raise ValueError(f"{where}: name {self.name!r} must be letters, digits and . _ / - (at most 128)")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.quant not in (None, "4bit", "8bit"):
            raise ValueError(f"{where}: quant must be 4bit or 8bit, not {self.quant!r}")
        for key in ("replicas", "max_queue", "model_max_length"):
            value = getattr(self, key)
            if value is not None and int(value) < 1:
                raise ValueError(f"{where}: {key} must be >= 1, not {value}")
        for key in ("num_gpus", "num_cpus", "max_masks"):
            value = getattr(self, key)
            if value is not None and float(value) < 0:
                raise ValueError(f"{where}: {key} must be >= 0, not {value}")

    @classmethod
    def from_dict(cls, data: dict, where: str = "model") -> "ModelSpec":
        if not isinstance(data, dict) or not data.get("path"):
            raise ValueError(f"{where}: each model needs a 'path'")
        known = {f.name: f.type for f in fields(cls)}
        values = dict(data)
        if values.pop("load_in_4bit", False):
            values.setdefault("quant", "4bit")
        if values.pop("load_in_8bit", False):
            values.setdefault("quant", "8bit")
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for key in ("replicas", "max_queue", "model_max_length", "max_masks"):
            if values.get(key) is not None:
                values[key] = _convert(values[key], int, key, where)
        for key in ("num_gpus", "num_cpus"):
            if values.get(key) is not None:
                values[key] = _convert(values[key], float, key, where)
        if isinstance(values.get("no_compile"), str):
            values["no_compile"] = values["no_compile"].lower() in ("1", "true", "yes", "on")
        return cls(**{k: str(v) if known[k] in ("str", "str | None") and v is not None else v
                      for k, v in values.items()})

    def with_defaults(self, defaults: dict) -> "ModelSpec":
        """Keys left out of the spec taken from ``defaults`` (the command's flags)."""
        values = asdict(self)
        for key, value in defaults.items():
            if key in values and values[key] is None:
                values[key] = value
        return ModelSpec(**values)

    def load(self, max_new_tokens: int = 512, cache_size: int = 8):
        """The pipeline, loaded as ``lisa chat`` and ``lisa app`` load theirs (the model flags' loader)."""
        from ..export import load_merged
        from ..inference.flags import load_pipeline

        flags = argparse.Namespace(
            version=self.path, model_base=self.model_base, precision=self.precision, device=self.device or "auto",
            vision_tower=self.vision_tower,
            sam_config=self.sam_config, load_in_4bit=self.quant == "4bit", load_in_8bit=self.quant == "8bit",
            conv_type=self.conv_type or "llava_v1", max_new_tokens=max_new_tokens,
            model_max_length=self.model_max_length or 512, revision=self.revision,
            max_masks=MAX_MASKS if self.max_masks is None else self.max_masks, no_compile=bool(self.no_compile))
        pipe = load_pipeline(flags, merged_loader=load_merged)
        pipe.cache.max_items = cache_size
        return pipe


def _convert(value, kind, key: str, where: str):
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {key} must be a number, not {value!r}") from None


def parse_spec(text: str) -> ModelSpec:
    """``PATH`` or ``PATH:key=value,key=value``."""
    match = _OPTS_RE.match(text)
    if not match:
        return ModelSpec.from_dict({"path": text}, f"--models {text!r}")
    opts = dict(pair.split("=", 1) for pair in match["opts"].split(","))
    return ModelSpec.from_dict({"path": match["path"], **opts}, f"--models {text!r}")


def read_models_file(path: str | Path) -> list[ModelSpec]:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use JSON") from None
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict):
        data = data.get("models")
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a list of models (or {{\"models\": [...]}})")
    specs = []
    for i, item in enumerate(data):
        item = dict(item) if isinstance(item, dict) else {"path": item}
        for key in ("path", "model_base"):  # relative to the file's folder when they are there
            local = path.parent / str(item.get(key) or "")
            if item.get(key) and not Path(str(item[key])).is_absolute() and local.exists():
                item[key] = str(local)
        specs.append(ModelSpec.from_dict(item, f"{path}: models[{i}]"))
    return specs


def model_specs(entries: list[str] | None, fallback: str | None = None) -> list[ModelSpec]:
    """``--models`` entries (specs or models files) -> specs with unique names; ``fallback`` (the
    ``--version`` folder) when there are none."""
    specs: list[ModelSpec] = []
    for entry in entries or ([fallback] if fallback else []):
        if entry.lower().endswith((".json", ".yaml", ".yml")) and Path(entry).is_file():
            specs.extend(read_models_file(entry))
        else:
            specs.append(parse_spec(entry))
    if not specs:
        raise ValueError("no model to serve: give --version or --models")
    seen = set()
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"two models are called {spec.name!r}; give one of them another name=")
        seen.add(spec.name)
    return specs
