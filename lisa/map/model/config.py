"""``MapDetectorConfig``: every size and source of the map detector, and the two presets.

``tiny`` is the small detector of the tests and ``lisa map demo`` (every part built from a config with
random weights, nothing read from disk). ``7b`` is the configuration users train: CLIP-L/14 (frozen),
the BLIP-2 Q-Former (32 queries of width 768), Vicuna-7B v1.5 (frozen). Sources of pretrained parts
are folder paths; nothing is downloaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..spec import CLASSES, NUM_POINTS, NUM_QUERIES

DEFAULT_INSTRUCTION = ("Detect the vectorized HD map around the ego car from the six surround camera images: "
                       "lane dividers, pedestrian crossings and road boundaries.")
CAMERAS: tuple[str, ...] = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT",
                            "CAM_BACK_RIGHT")
CONFIG_FORMAT = "lisa-map-detector"


@dataclass
class MapDetectorConfig:
    preset: str = "7b"
    # vision tower (CLIP, frozen): a folder CLIPVisionModel loads, or a config for random weights
    vision_path: str | None = None
    vision: dict = field(default_factory=dict)
    select_layer: int = -2  # LLaVA's choice: the penultimate layer's patch features
    image_size: int = 224
    cameras: tuple[str, ...] = CAMERAS
    # Q-Former: "blip2" (the Hugging Face cache's Salesforce/blip2-opt-2.7b), a BLIP-2 folder, or "none"
    qformer_pretrained: str = "none"
    qformer: dict = field(default_factory=dict)
    num_query_tokens: int = 32
    # LLM (frozen in stage 2): a causal-LM folder (or a LLaVA / LISA checkpoint folder), or a config
    llm_path: str | None = None
    llm: dict = field(default_factory=dict)
    llm_lora: dict | None = None  # stage 3 with LoRA: {"r", "alpha", "dropout", "targets"}
    tokenizer: str = "auto"  # "auto": the LLM folder's tokenizer; "bytes": UTF-8 bytes (tiny preset)
    instruction: str = DEFAULT_INSTRUCTION
    # map queries and decoder (trained from scratch)
    num_map_queries: int = NUM_QUERIES
    num_points: int = NUM_POINTS
    num_classes: int = len(CLASSES)
    decoder_dim: int = 256
    decoder_layers: int = 3
    decoder_heads: int = 8
    decoder_ffn: int = 1024
    decoder_dropout: float = 0.1

    def to_dict(self) -> dict:
        data = asdict(self)
        data["cameras"] = list(self.cameras)
        return {"format": CONFIG_FORMAT, "format_version": 1, **data}

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> MapDetectorConfig:
        data = dict(data)
        fmt = data.pop("format", CONFIG_FORMAT)
        data.pop("format_version", None)
        if fmt != CONFIG_FORMAT:
            raise ValueError(f"{where}: not a map detector config (format {fmt!r}, expected {CONFIG_FORMAT!r})")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown map detector config field(s): {', '.join(unknown)}")
        if "cameras" in data:
            data["cameras"] = tuple(data["cameras"])
        return cls(**data)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> MapDetectorConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: map detector config not found") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: malformed JSON ({e})") from e
        return cls.from_dict(data, str(path))


def _tiny() -> MapDetectorConfig:
    return MapDetectorConfig(
        preset="tiny",
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                    image_size=64, patch_size=8, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=32),
        select_layer=-1,
        image_size=64,
        qformer_pretrained="none",
        qformer=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     cross_attention_frequency=1, encoder_hidden_size=32, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0),
        num_query_tokens=8,
        llm=dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4, vocab_size=260, max_position_embeddings=512,
                 rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0),
        tokenizer="bytes",
        decoder_dim=64, decoder_layers=2, decoder_heads=4, decoder_ffn=128, decoder_dropout=0.0,
    )


def _seven_b() -> MapDetectorConfig:
    # The paths are the Hugging Face names users know; they are only read from a local copy (the
    # cache or a folder given with --llm_path / --vision_path), never downloaded.
    return MapDetectorConfig(
        preset="7b",
        vision_path="openai/clip-vit-large-patch14",
        # the configs of those folders, for building the detector without them (``lisa map params
        # --meta``, shapes only); a loaded folder replaces them
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=224, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768),
        image_size=224,
        qformer_pretrained="blip2",
        # BLIP-2's Q-Former cross-attends to 1408-wide EVA features; a Linear adapts CLIP-L's 1024
        qformer=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                     cross_attention_frequency=2, encoder_hidden_size=1408),
        num_query_tokens=32,
        llm_path="lmsys/vicuna-7b-v1.5",
        llm=dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096,
                 rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0),
        decoder_dim=256, decoder_layers=3, decoder_heads=8, decoder_ffn=1024,
    )


PRESETS = {"tiny": _tiny, "7b": _seven_b}


def preset_config(name: str, **overrides) -> MapDetectorConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown map detector preset {name!r}; choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[name]()
    for k, v in overrides.items():
        if v is None:
            continue
        if not hasattr(cfg, k):
            raise ValueError(f"unknown map detector option {k!r}")
        setattr(cfg, k, v)
    return cfg
