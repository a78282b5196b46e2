"""Model construction for training: load, loss weights, LoRA on the LLM, what is trainable.

As the original ``train_ds.py``: LoRA on the LLM linears whose names contain one of
``--lora_target_modules`` (never SAM, CLIP, the projector or the [SEG] head, which also have
``q_proj``/``v_proj``), the full ``lm_head`` and ``embed_tokens``, SAM's mask decoder and the
[SEG] head trainable; CLIP, projector and SAM's image/prompt encoders frozen.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from .options import SAM_PLACEHOLDER, TrainOptions

log = logging.getLogger("lisa.train")

# Module-name prefixes (our LisaForSegmentation) that never get LoRA.
LORA_EXCLUDED = ("sam.", "vision_tower.", "mm_projector.", "text_hidden_fcs.")


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    modules: list[str] = field(default_factory=list)  # resolved full module names

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


def find_lora_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """Full names of the LLM ``nn.Linear`` modules whose name contains any of ``targets``
    (the original's ``find_linear_layers``), sorted."""
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or name.startswith(LORA_EXCLUDED):
            continue
        if name.endswith("lm_head"):
            continue
        if any(t in name for t in targets):
            names.append(name)
    if not names:
        raise ValueError(f"--lora_target_modules {','.join(targets)}: no linear layer of the language model "
                         "matches (names look like llm.model.layers.0.self_attn.q_proj)")
    return sorted(names)


def apply_lora(model: nn.Module, settings: LoraSettings) -> LoraSettings:
    """Inject LoRA adapters (peft) in place; the model keeps its class and forward."""
    from peft import LoraConfig, inject_adapter_in_model

    settings.modules = find_lora_targets(model, settings.targets)
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.modules, bias="none")
    inject_adapter_in_model(config, model)
    return settings


def set_trainable(model: nn.Module, *, train_mask_decoder: bool = True, train_embeddings: bool = True,
                  train_projector: bool = False, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Freeze everything, then unfreeze LoRA, (lm_head, embed_tokens), mask decoder, [SEG] head and
    every parameter whose name starts with one of ``extra`` (``--train_modules``)."""
    extra = tuple(extra)
    unknown = [e for e in extra if not any(n.startswith(e) for n, _ in model.named_parameters())]
    if unknown:
        raise ValueError(f"--train_modules {','.join(unknown)}: no parameter name starts with it (names look "
                         "like llm.model.layers.0..., sam.vision_encoder..., vision_tower..., mm_projector...)")
    keys = []
    if train_embeddings:
        keys += ["lm_head", "embed_tokens"]
    if train_mask_decoder:
        keys.append("sam.mask_decoder.")
    keys.append("text_hidden_fcs.")
    names = []
    for name, p in model.named_parameters():
        trainable = ("lora_" in name
                     or (any(k in name for k in keys) and not name.startswith("vision_tower."))
                     or (train_projector and name.startswith("mm_projector."))
                     or (bool(extra) and name.startswith(extra)))
        p.requires_grad_(trainable)
        if trainable:
            names.append(name)
    return names


def count_parameters(model: nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def enable_checkpointing(llm: nn.Module) -> None:
    """Recompute the LLM's activations in backward (non-reentrant: works with frozen inputs too)."""
    if hasattr(llm, "activation_checkpointing_enable"):
        llm.activation_checkpointing_enable({"use_reentrant": False})
    else:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _sam_checkpoint(args, folder_has_sam: bool) -> str | None:
    path = args.vision_pretrained
    if folder_has_sam or args.no_seg:
        return None
    if not path or path == SAM_PLACEHOLDER:
        if args.sam_config:
            log.warning("no --vision_pretrained: SAM starts from random weights (%s)", args.sam_config)
            return None
        raise ValueError(f"--version {args.version} is a base LLaVA model: pass the official SAM weights with "
                         "--vision_pretrained PATH (e.g. sam_vit_h_4b8939.pth)")
    from ..checkpoint.errors import CheckpointError
    from ..checkpoint.hub import resolve_file

    try:
        return str(resolve_file(path))  # a local file, or owner/name[@revision]/file on the Hub
    except CheckpointError as e:
        raise ValueError(f"--vision_pretrained {e}") from e


def _fit_new_seg_head(model, out_dim: int) -> None:
    """The [SEG] head of a base model is new: its output must be SAM's prompt dimension."""
    from ..model.lisa import build_seg_head

    prompt_dim = int(model.sam.config.prompt_encoder_config.hidden_size)
    if out_dim != prompt_dim:
        log.warning("--out_dim %d does not match the SAM prompt dimension %d: using %d", out_dim, prompt_dim,
                    prompt_dim)
    if model.config.out_dim != prompt_dim:
        model.text_hidden_fcs = build_seg_head(model.config.hidden_size, prompt_dim)
        model.config.out_dim = prompt_dim


def quantize_for_training(model, bits: int) -> None:
    """QLoRA: the LLM's decoder linears as bitsandbytes nf4 (``bits`` 4) or int8 (8) weights on this
    process's device, frozen; LoRA then wraps them with peft's bitsandbytes layers."""
    from .. import dist
    from ..model.quantize import quantize_llm

    quantize_llm(model, "4bit" if bits == 4 else "8bit", dist.device())
    # peft picks its bitsandbytes LoRA layers by this flag of the model it is given
    model.is_loaded_in_4bit, model.is_loaded_in_8bit = bits == 4, bits == 8


def build_model(args: TrainOptions):
    """(model, tokenizer, lora settings) ready to be handed to DeepSpeed."""
    from ..checkpoint.hub import resolve_model
    from ..checkpoint.loader import load_pretrained, read_config
    from .conversion import load_as_lisa

    folder = resolve_model(args.version)  # a folder, or a Hub id (owner/name[@revision])
    if not folder.is_dir():
        raise ValueError(f"--version {args.version}: model folder not found")
    base_cfg = read_config(folder)
    if args.no_seg and base_cfg.has_seg_head:
        raise ValueError(f"--no_seg: {args.version} is a LISA checkpoint; plain LLaVA fine-tuning needs a LLaVA model")
    torch.manual_seed(args.seed)
    # in the training dtype (as the original's torch_dtype): half the host memory per process for
    # bf16; DeepSpeed keeps fp32 master copies of the trainable parameters
    common = dict(vision_tower=args.vision_tower, sam_config_file=args.sam_config, precision=args.precision,
                  model_max_length=args.model_max_length, progress=True)
    if args.no_seg:
        model, tokenizer = load_pretrained(folder, **common)
    else:
        model, tokenizer = load_as_lisa(folder, sam_checkpoint=_sam_checkpoint(args, base_cfg.has_seg_head),
                                        use_mm_start_end=args.use_mm_start_end, **common)
    cfg = model.config
    # load_as_lisa resized the embeddings for [SEG] etc.; keep the config that export writes in step
    cfg.llm["vocab_size"] = int(model.llm.get_input_embeddings().weight.shape[0])
    # Set from the flags whatever the checkpoint is: the original only did so for base LLaVA
    # configs and crashed when fine-tuning a LISA checkpoint (its config has no loss weights).
    cfg.ce_loss_weight = float(args.ce_loss_weight)
    cfg.dice_loss_weight = float(args.dice_loss_weight)
    cfg.bce_loss_weight = float(args.bce_loss_weight)
    if cfg.has_seg_head and not base_cfg.has_seg_head:
        _fit_new_seg_head(model, args.out_dim)
    # what inference must do the same way: the image preparation and the prompt template of training
    aspect = getattr(args, "image_aspect_ratio", "square")
    if aspect != cfg.image_aspect_ratio:
        cfg.extra["image_aspect_ratio"] = aspect
    cfg.conv_type = args.conv_type
    bits = getattr(args, "bits", 16)
    if bits != 16:
        quantize_for_training(model, bits)
    model.train()
    if args.gradient_checkpointing:
        enable_checkpointing(model.llm)
    settings = LoraSettings(args.lora_r, args.lora_alpha, args.lora_dropout, list(args.lora_targets))
    lora = apply_lora(model, settings) if args.lora_r > 0 else settings
    set_trainable(model, train_mask_decoder=args.train_mask_decoder, train_embeddings=args.train_embeddings,
                  train_projector=args.mm_projector_lr is not None, extra=args.train_prefixes)
    return model, tokenizer, lora
