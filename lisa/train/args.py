"""``lisa train`` flags: the original ``train_ds.py`` names and defaults, plus what this project adds,
parsed into :class:`~lisa.train.options.TrainOptions` (which holds the defaults).

Store-true flags that the original could not turn off (``--train_mask_decoder``,
``--gradient_checkpointing``, ``--use_mm_start_end``, ``--auto_resume``) keep their default True and
get a ``--no_*`` counterpart.
"""

from __future__ import annotations

import argparse
import os

from ..conversation import TEMPLATES
from ..precision import PRECISIONS
from .options import TrainOptions

# LLaVA-1.5's task-LoRA recipe (finetune_task_lora.sh): r 128, alpha 256, every linear layer of the
# LLM, the projector trained with its own learning rate, lm_head / embeddings left frozen; cosine
# schedule with a 3% warm-up, AdamW's default betas, one epoch = one shuffled pass over the file,
# 2048 tokens, images padded to a square, batches grouped by modality and length, 16 per device.
LORA_PRESETS = {
    "lisa": dict(lora_r=8, lora_alpha=16, lora_dropout=0.05, lora_target_modules="q_proj,v_proj"),
    "llava15": dict(lora_r=128, lora_alpha=256, lora_dropout=0.05,
                    lora_target_modules="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                    lr=2e-4, mm_projector_lr=2e-5, train_embeddings=False, lr_scheduler="cosine",
                    warmup_ratio=0.03, beta2=0.999, epochs=1, epoch_over_data=True,
                    group_by_modality_length=True, model_max_length=2048, image_aspect_ratio="pad",
                    batch_size=16, grad_accumulation_steps=1),
}

DEFAULTS = TrainOptions()


def _bool_pair(ap: argparse.ArgumentParser, name: str, help: str) -> None:
    ap.add_argument(f"--{name}", dest=name, action="store_true", help=help)
    ap.add_argument(f"--no_{name}", dest=name, action="store_false", help=f"turn --{name} off")


def build_parser(prog: str = "lisa train") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog, description="Train LISA (or plain LLaVA) with LoRA through DeepSpeed.")
    a = ap.add_argument
    # ---- as in train_ds.py ---------------------------------------------------------------------
    a("--local_rank", "--local-rank", dest="local_rank", type=int,
      help="set by the deepspeed launcher (otherwise from LOCAL_RANK)")
    a("--version",
      help="base LLaVA or LISA checkpoint to fine-tune: a folder or a Hub id (owner/name[@revision])")
    a("--vis_save_path", help="accepted for compatibility; unused")
    a("--precision", choices=PRECISIONS)
    a("--image_size", type=int, help="SAM input size (the model's SAM decides)")
    a("--model_max_length", type=int)
    a("--lora_r", type=int, help="LoRA rank; 0 trains without LoRA (see --train_modules)")
    a("--vision-tower", "--vision_tower", dest="vision_tower",
      help="local CLIP folder (default: the one the model config names)")
    a("--load_in_8bit", action="store_true", help="accepted for compatibility; unused")
    a("--load_in_4bit", action="store_true", help="accepted for compatibility; unused")
    a("--dataset")
    a("--sample_rates")
    a("--sem_seg_data")
    a("--refer_seg_data")
    a("--vqa_data")
    a("--reason_seg_data")
    a("--val_dataset", help="one set, or several joined by '||'")
    a("--dataset_dir")
    a("--log_base_dir")
    a("--exp_name")
    a("--epochs", type=int)
    a("--steps_per_epoch", type=int)
    a("--batch_size", type=int, help="per device and micro-step")
    a("--grad_accumulation_steps", type=int)
    a("--val_batch_size", type=int)
    a("--workers", type=int)
    a("--lr", type=float)
    a("--ce_loss_weight", type=float)
    a("--dice_loss_weight", type=float)
    a("--bce_loss_weight", type=float)
    a("--lora_alpha", type=int)
    a("--lora_dropout", type=float)
    a("--lora_target_modules")
    a("--explanatory", type=float)
    a("--beta1", type=float)
    a("--beta2", type=float)
    a("--num_classes_per_sample", type=int)
    a("--exclude_val", action="store_true", help="accepted for compatibility; no-op as in the original")
    a("--no_eval", action="store_true")
    a("--eval_only", action="store_true")
    a("--vision_pretrained",
      help="official SAM .pth, a file or owner/name[@revision]/file on the Hub (needed when --version is a "
      "base LLaVA model)")
    a("--out_dim", type=int)
    a("--resume", help="DeepSpeed checkpoint folder (ckpt_model or one of its global_step* tags)")
    a("--print_freq", type=int)
    a("--start_epoch", type=int, help="accepted for compatibility; resume decides")
    _bool_pair(ap, "gradient_checkpointing", "recompute LLM activations in backward (default on)")
    _bool_pair(ap, "train_mask_decoder", "train SAM's mask decoder (default on)")
    _bool_pair(ap, "use_mm_start_end", "wrap <image> in <im_start>/<im_end> (default on)")
    _bool_pair(ap, "auto_resume", "continue from runs/<exp>/ckpt_model when it exists (default on)")
    a("--conv_type", choices=sorted(TEMPLATES), help="prompt template (LISA: llava_v1)")
    # ---- added by this project -----------------------------------------------------------------
    a("--seed", type=int)
    a("--sam_config", help="SamConfig JSON for a SAM other than ViT-H")
    a("--deepspeed_config", "--deepspeed-config", dest="deepspeed_config",
      help="DeepSpeed JSON replacing the built-in ZeRO-2 config (e.g. ZeRO-3, offload)")
    a("--deepspeed", action="store_true", help="accepted (set by some launch scripts); DeepSpeed is always used")
    a("--save_steps", type=int, help="also save a checkpoint every N optimizer steps")
    a("--warmup_steps", type=int, help="linear warm-up steps of WarmupDecayLR")
    a("--weight_decay", type=float)
    a("--max_bad_steps", type=int,
      help="stop after this many optimizer steps in a row with a non-finite loss")
    a("--no_seg", action="store_true", help="plain LLaVA fine-tuning: no [SEG], no SAM, text loss only")
    a("--image_folder", help="image folder of --vqa_data (default <dataset_dir>/coco/train2017)")
    a("--lora_preset", choices=sorted(LORA_PRESETS),
      help="llava15: LLaVA-1.5 task LoRA (r 128, alpha 256, all LLM linears, projector lr 2e-5)")
    a("--mm_projector_lr", type=float, help="train the projector with this learning rate")
    _bool_pair(ap, "train_embeddings", "train the full lm_head and embed_tokens (default on, as LISA)")
    a("--train_modules", help="comma-separated parameter-name prefixes (e.g. "
      "sam.vision_encoder,llm.model.layers,vision_tower) also trained in full")
    a("--lr_scales", help="per-module learning rates as comma-separated PREFIX=FACTOR pairs "
      "(e.g. sam.vision_encoder=0.1): parameters whose name starts with PREFIX train at FACTOR x --lr")
    a("--strict_data", action="store_true", help="stop at the first unusable sample instead of skipping it")
    a("--wandb", action="store_true", help="also log to Weights & Biases (needs the wandb package)")
    a("--max_steps", type=int, help="stop after this many optimizer steps in total (0: all epochs)")
    a("--protocol", choices=["teacher", "generate"], help="validation protocol")
    a("--all_queries", action="store_true", help="validate on every query text of an image")
    a("--save_masks", help="with --eval_only: write predicted masks to this folder")
    a("--max_new_tokens", type=int, help="answer length for --protocol generate")
    a("--tag", help="checkpoint tag to resume / evaluate (default: the newest complete one)")
    a("--lr_scheduler", choices=["warmup_decay", "cosine"],
      help="warmup_decay: linear warm-up and decay (LISA); cosine: linear warm-up, cosine decay to 0 (LLaVA)")
    a("--warmup_ratio", type=float, help="warm-up as a fraction of all steps (replaces --warmup_steps)")
    _bool_pair(ap, "epoch_over_data", "one shuffled pass over the records per epoch, no replacement "
               "(LLaVA); --steps_per_epoch then defaults to one pass")
    _bool_pair(ap, "group_by_modality_length", "with --epoch_over_data: batches of one modality "
               "(image or text only) and similar length (LLaVA's option)")
    a("--image_aspect_ratio", choices=["square", "pad"],
      help="pad: centre the image on a square of the processor's mean colour first (LLaVA-1.5); "
      "square: the processor's resize and centre crop (LISA)")
    a("--bits", type=int, choices=[4, 8, 16],
      help="4: QLoRA (the LLM's linear layers in bitsandbytes nf4, LoRA on top); 8: int8; 16: as --precision")
    ap.set_defaults(**{name: getattr(DEFAULTS, name) for name in TrainOptions.flag_names()})
    return ap


def _explicit(argv: list[str], name: str) -> bool:
    return any(a == f"--{name}" or a.startswith(f"--{name}=") for a in argv)


def resolve(args: TrainOptions | argparse.Namespace, argv: list[str] | None = None) -> TrainOptions:
    """Apply the LoRA preset (explicit flags win), derive rank/world, check values."""
    if isinstance(args, argparse.Namespace):
        args = TrainOptions.from_namespace(args)
    argv = list(argv or [])
    if args.lora_preset:
        for key, value in LORA_PRESETS[args.lora_preset].items():
            if not _explicit(argv, key):
                setattr(args, key, value)
    names = [n for n in args.dataset.split("||") if n]
    if not names:
        raise ValueError("--dataset is empty")
    if len(args.sample_rates.split(",")) != len(names) and not _explicit(argv, "sample_rates"):
        args.sample_rates = ",".join("1" for _ in names)  # the original default only fits 4 datasets
    if args.lora_r < 0:
        raise ValueError(f"--lora_r must be >= 0 (0: no LoRA), got {args.lora_r}")
    if args.epoch_over_data and not _explicit(argv, "steps_per_epoch"):
        args.steps_per_epoch = 0  # one pass over the data: known once the data is read
    for key in ("epochs", "steps_per_epoch", "batch_size", "grad_accumulation_steps", "print_freq"):
        if getattr(args, key) < (0 if key == "steps_per_epoch" and args.epoch_over_data else 1):
            raise ValueError(f"--{key} must be >= 1, got {getattr(args, key)}")
    if args.warmup_ratio is not None and not 0 <= args.warmup_ratio < 1:
        raise ValueError(f"--warmup_ratio must be in [0, 1), got {args.warmup_ratio}")
    if args.bits != 16 and args.lora_r == 0:
        raise ValueError(f"--bits {args.bits} trains LoRA on a quantized LLM: --lora_r must be > 0")
    if args.val_batch_size != 1:
        raise ValueError("--val_batch_size must be 1 (one image per validation step, as the original)")
    if args.local_rank is None:
        args.local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if args.deepspeed_config and not os.path.isfile(args.deepspeed_config):
        raise ValueError(f"--deepspeed_config {args.deepspeed_config}: file not found")
    args.lora_targets = [t.strip() for t in args.lora_target_modules.split(",") if t.strip()]
    args.train_prefixes = [t.strip() for t in args.train_modules.split(",") if t.strip()]
    args.lr_scale_list = parse_lr_scales(args.lr_scales)
    if not args.lora_targets and args.lora_r > 0:
        raise ValueError("--lora_target_modules is empty")
    return args


def parse_lr_scales(text: str) -> list[tuple[str, float]]:
    """``"a.b=0.1,c=2"`` -> ``[("a.b", 0.1), ("c", 2.0)]``; the first matching prefix wins."""
    out = []
    for item in (t.strip() for t in (text or "").split(",")):
        if not item:
            continue
        prefix, sep, factor = item.partition("=")
        try:
            value = float(factor)
        except ValueError:
            value = None
        if not sep or not prefix.strip() or value is None or not value >= 0:
            raise ValueError(f"--lr_scales: {item!r} is not PREFIX=FACTOR with a factor >= 0")
        out.append((prefix.strip(), value))
    return out


def parse_args(argv: list[str] | None = None) -> TrainOptions:
    argv = list(argv or [])
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return resolve(args, argv)
    except ValueError as e:
        ap.error(str(e))


def options(**overrides) -> TrainOptions:
    """Defaults of every flag with ``overrides`` applied (the Python API's way to build options)."""
    unknown = set(overrides) - set(TrainOptions.flag_names())
    if unknown:
        raise TypeError(f"unknown training options: {sorted(unknown)}")
    return resolve(TrainOptions(**overrides), [f"--{k}" for k in overrides])


namespace = options  # the name this function had when the options were an argparse namespace


def to_json(args: TrainOptions) -> str:
    return args.to_json()


__all__ = ["TrainOptions", "build_parser", "options", "parse_args", "parse_lr_scales", "resolve"]
