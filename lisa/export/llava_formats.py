"""The two layouts the LLaVA world loads: ``lisa export --format llava`` and ``--format llava-hf``.

- ``llava``: the original LLaVA repository's (what its ``merge_lora_weights.py`` writes): a flat
  ``config.json`` of ``LlavaLlamaForCausalLM`` (``model_type: llava_llama`` and LLaVA's ``mm_*``
  fields), the language model's tensors with the projector as ``model.mm_projector.*``, in
  safetensors shards, and the tokenizer. LLaVA loads the vision tower from ``mm_vision_tower``; the
  tower is also written beside the weights (``vision_tower/``, with its image processor file).
- ``llava-hf``: transformers' own ``LlavaForConditionalGeneration`` (``text_config``,
  ``vision_config``, ``image_token_index``, ``multi_modal_projector``, the tower included), written
  by transformers itself, with a ``LlavaProcessor`` (image processor, tokenizer with the ``<image>``
  token, chat template), so transformers pipelines and inference servers load the folder directly.

Neither layout has a place for SAM or the [SEG] head: a LISA model is exported as its LLaVA part.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

log = logging.getLogger("lisa.export")

# our language model type -> (LLaVA's model_type, its architecture) in the original repository's naming
LLAVA_CLASSES = {"llama": ("llava_llama", "LlavaLlamaForCausalLM"),
                 "mistral": ("llava_mistral", "LlavaMistralForCausalLM"),
                 "qwen2": ("llava_qwen", "LlavaQwenForCausalLM")}

# llava_v1's prompt as a Jinja chat template (USER/ASSISTANT turns after the system sentence)
_LLAVA_V1_CHAT_TEMPLATE = (
    "{{- '" + "{system}" + " ' -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}{%- set ns = namespace(text='') -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{%- set ns.text = ns.text + '<image>\\n' -%}"
    "{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{%- set ns.text = ns.text + part['text'] -%}"
    "{%- endfor -%}{%- set text = ns.text -%}{%- endif -%}"
    "{%- if message['role'] == 'user' -%}{{- 'USER: ' + text + ' ' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- 'ASSISTANT: ' + text + eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}")


def siglip_tower(cfg) -> bool:
    return (cfg.vision or {}).get("model_type") == "siglip_vision_model"


def _llava_part(model) -> dict[str, torch.Tensor]:
    """Our tensors of the LLaVA part (no SAM, no [SEG] head), contiguous."""
    if model.config.has_seg_head:
        log.warning("the LLaVA layouts have no place for SAM and the [SEG] head: only the LLaVA part is written")
    skip = ("sam.", "text_hidden_fcs.")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith(skip)}
    if getattr(model.llm.config, "tie_word_embeddings", False):
        state.pop("llm.lm_head.weight", None)
    return state


def _image_processor_config(cfg, pad: bool = False) -> dict:
    """The tower's image processor settings; with ``pad`` LLaVA's padding processor (for a SigLIP
    tower with SigLIP's mean and std: a square image is then resized whole, as SigLIP's processor does)."""
    vision = cfg.vision or {}
    size = int(vision.get("image_size", 224))
    if siglip_tower(cfg) and pad:
        return {"image_processor_type": "LlavaImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
                "resample": 3, "do_center_crop": True, "crop_size": {"height": size, "width": size},
                "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True}
    if siglip_tower(cfg):
        return {"image_processor_type": "SiglipImageProcessor", "do_resize": True,
                "size": {"height": size, "width": size}, "resample": 3, "do_rescale": True,
                "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    from ..constants import CLIP_MEAN, CLIP_STD

    return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
            "resample": 3, "do_center_crop": True, "crop_size": {"height": size, "width": size},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(CLIP_MEAN),
            "image_std": list(CLIP_STD), "do_convert_rgb": True}


def save_llava(model, tokenizer, out, *, max_shard_size="10GB", progress: bool = True) -> Path:
    """The original LLaVA repository's layout (``merge_lora_weights.py``'s output)."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from ..checkpoint.layout import internal_to_lisa
    from ..checkpoint.saver import _parse_size, _shard

    cfg = model.config
    llm_type = cfg.llm.get("model_type", "llama")
    if llm_type not in LLAVA_CLASSES:
        raise ValueError(f"--format llava: the LLaVA repository has no class for a {llm_type!r} language model "
                         f"(it has {', '.join(sorted(LLAVA_CLASSES))})")
    model_type, arch = LLAVA_CLASSES[llm_type]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tower = out / "vision_tower"
    model.vision_tower.vision_tower.save_pretrained(tower)
    (tower / "preprocessor_config.json").write_text(json.dumps(_image_processor_config(cfg), indent=2))
    named = cfg.vision_tower or ""
    # a Hub name stays (LLaVA loads the tower by it); a local path becomes the copy written beside
    ref = named if "/" in named and not Path(named).is_absolute() and not Path(named).exists() else "vision_tower"
    config = {k: v for k, v in cfg.llm.items() if k != "model_type"}
    config.update(cfg.extra)
    config.update({
        "architectures": [arch], "model_type": model_type,
        "mm_vision_tower": ref, "mm_hidden_size": cfg.mm_hidden_size, "mm_projector_type": cfg.projector_type,
        "mm_vision_select_layer": cfg.select_layer, "mm_vision_select_feature": cfg.select_feature,
        "mm_use_im_start_end": cfg.mm_use_im_start_end, "mm_use_im_patch_token": False,
        "mm_patch_merge_type": "flat", "image_aspect_ratio": cfg.image_aspect_ratio, "use_mm_proj": True,
        "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False, "unfreeze_mm_vision_tower": False,
        "tokenizer_padding_side": "right", "tokenizer_model_max_length": int(getattr(tokenizer, "model_max_length",
                                                                                     2048) or 2048),
        "use_cache": True, "torch_dtype": str(model.llm.get_input_embeddings().weight.dtype).replace("torch.", ""),
    })
    (out / "config.json").write_text(json.dumps(config, indent=2))
    gen = {k: cfg.llm.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id") if cfg.llm.get(k) is not None}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    state = internal_to_lisa({k: v for k, v in _llava_part(model).items()
                              if not k.startswith("vision_tower.")}, include_vision=False)
    for old in list(out.glob("model*.safetensors")) + list(out.glob("*.index.json")):
        old.unlink()
    shards = _shard(state, _parse_size(max_shard_size))
    names = ["model.safetensors"] if len(shards) == 1 else \
        [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for name, shard in tqdm(list(zip(names, shards)), desc="Writing shards", disable=not progress or len(shards) < 2):
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    if len(shards) > 1:
        total = sum(v.numel() * v.element_size() for v in state.values())
        (out / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    tokenizer.save_pretrained(str(out))
    return out


def hf_config(model, image_token_index: int, vocab_size: int):
    """The ``LlavaConfig`` of our model."""
    from transformers import AutoConfig, LlavaConfig

    cfg = model.config
    if cfg.projector_type != "mlp2x_gelu":
        raise ValueError(f"--format llava-hf: transformers' LLaVA has a two-layer MLP projector; this model's is "
                         f"{cfg.projector_type!r} (LLaVA v1): use --format llava or native")
    if cfg.mm_use_im_start_end:
        raise ValueError("--format llava-hf: the model wraps images in <im_start>/<im_end>, which transformers' "
                         "LLaVA does not do: use --format llava or native")
    text = dict(cfg.llm, vocab_size=vocab_size)
    text_config = AutoConfig.for_model(text.pop("model_type"), **text)
    vision = dict(cfg.vision)
    vision_config = AutoConfig.for_model(vision.pop("model_type", "clip_vision_model"), **vision)
    siglip = siglip_tower(cfg)
    return LlavaConfig(text_config=text_config, vision_config=vision_config, image_token_index=image_token_index,
                       projector_hidden_act="gelu", vision_feature_layer=cfg.select_layer,
                       vision_feature_select_strategy="default" if cfg.select_feature == "patch" and not siglip
                       else "full", image_seq_length=cfg.num_image_tokens, multimodal_projector_bias=True,
                       tie_word_embeddings=bool(cfg.llm.get("tie_word_embeddings", False)))


def save_llava_hf(model, tokenizer, out, *, max_shard_size="10GB", progress: bool = True) -> Path:
    """transformers' ``LlavaForConditionalGeneration`` folder with its processor."""
    import copy

    from transformers import LlavaForConditionalGeneration, LlavaProcessor
    from transformers.initialization import no_init_weights

    from ..checkpoint.llava_hf import IMAGE_TOKEN, internal_to_llava_hf
    from ..conversation import LLAVA_V1_SYSTEM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = copy.deepcopy(tokenizer)
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    image_token_index = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    state = _llava_part(model)
    embed = state["llm.model.embed_tokens.weight"]
    rows = max(embed.shape[0], len(tokenizer))
    if rows > embed.shape[0]:
        # the <image> row is never read (image features take its place); the output row is the mean of the
        # others, a typical score that keeps generation from preferring it
        grow = rows - embed.shape[0]
        state["llm.model.embed_tokens.weight"] = torch.cat([embed, embed.mean(0, keepdim=True).expand(grow, -1)])
        if "llm.lm_head.weight" in state:
            head = state["llm.lm_head.weight"]
            state["llm.lm_head.weight"] = torch.cat([head, head.mean(0, keepdim=True).expand(grow, -1)])
    config = hf_config(model, image_token_index, rows)
    config.dtype = embed.dtype
    with no_init_weights():
        hf = LlavaForConditionalGeneration(config)
    missing, unexpected = hf.load_state_dict(internal_to_llava_hf(state), strict=False, assign=True)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"--format llava-hf: tensors do not fit LlavaForConditionalGeneration: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}")
    if config.tie_word_embeddings:
        hf.tie_weights()
    hf.save_pretrained(str(out), max_shard_size=max_shard_size)
    pad = model.config.image_aspect_ratio == "pad"
    image_processor = _build_image_processor(_image_processor_config(model.config, pad), pad=pad)
    chat_template = _LLAVA_V1_CHAT_TEMPLATE.replace("{system}", LLAVA_V1_SYSTEM.replace("'", "\\'")) \
        if (model.config.conv_type or "llava_v1") in ("llava_v1", "vicuna_v1") else None
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=int(model.config.vision.get("patch_size", 14)),
                               vision_feature_select_strategy=config.vision_feature_select_strategy,
                               chat_template=chat_template, image_token=IMAGE_TOKEN,
                               # CLIP's CLS token is one more output token ("default" then drops it)
                               num_additional_image_tokens=0 if siglip_tower(model.config) else 1)
    processor.save_pretrained(str(out))
    return out


def _build_image_processor(cfg: dict, pad: bool):
    kwargs = {k: v for k, v in cfg.items() if k != "image_processor_type"}
    if cfg["image_processor_type"] == "SiglipImageProcessor":
        from transformers import SiglipImageProcessor

        return SiglipImageProcessor(**kwargs)
    try:  # the PIL implementation needs no torchvision
        from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil as Processor
    except ImportError:
        from transformers import LlavaImageProcessor as Processor
    return Processor(**kwargs, do_pad=pad)
