"""``TrainOptions``: every option of ``lisa train`` (and ``lisa eval``) as one typed dataclass.

The field defaults are the flags' defaults (the original ``train_ds.py``'s where it had the flag);
``lisa.train.args`` builds the command line from them and parses into this class. The last three
fields are derived from the others by :func:`lisa.train.args.resolve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..options import CommandOptions

SAM_PLACEHOLDER = "PATH_TO_SAM_ViT-H"  # the original's default --vision_pretrained: no file given
ORIGINAL_DEFAULT_RATES = "9,3,3,1"


@dataclass
class TrainOptions(CommandOptions):
    # ---- as in train_ds.py ------------------------------------------------------------------
    local_rank: int | None = None
    version: str = "liuhaotian/llava-llama-2-13b-chat-lightning-preview"
    vis_save_path: str = "./vis_output"
    precision: str | None = "bf16"  # None (lisa eval): bf16 on CUDA, fp32 elsewhere
    image_size: int = 1024
    model_max_length: int = 512
    lora_r: int = 8
    vision_tower: str | None = None
    load_in_8bit: bool = False
    load_in_4bit: bool = False
    dataset: str = "sem_seg||refer_seg||vqa||reason_seg"
    sample_rates: str = ORIGINAL_DEFAULT_RATES
    sem_seg_data: str = "ade20k||cocostuff||pascal_part||paco_lvis||mapillary"
    refer_seg_data: str = "refclef||refcoco||refcoco+||refcocog"
    vqa_data: str = "llava_instruct_150k"
    reason_seg_data: str = "ReasonSeg|train"
    val_dataset: str = "ReasonSeg|val"
    dataset_dir: str = "./dataset"
    log_base_dir: str = "./runs"
    exp_name: str = "lisa"
    epochs: int = 10
    steps_per_epoch: int = 500
    batch_size: int = 2
    grad_accumulation_steps: int = 10
    val_batch_size: int = 1
    workers: int = 4
    lr: float = 0.0003
    ce_loss_weight: float = 1.0
    dice_loss_weight: float = 0.5
    bce_loss_weight: float = 2.0
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: str = "q_proj,v_proj"
    explanatory: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    num_classes_per_sample: int = 3
    exclude_val: bool = False
    no_eval: bool = False
    eval_only: bool = False
    vision_pretrained: str = SAM_PLACEHOLDER
    out_dim: int = 256
    resume: str = ""
    print_freq: int = 1
    start_epoch: int = 0
    gradient_checkpointing: bool = True
    train_mask_decoder: bool = True
    use_mm_start_end: bool = True
    auto_resume: bool = True
    conv_type: str = "llava_v1"
    # ---- added by this project --------------------------------------------------------------
    seed: int = 0
    sam_config: str | None = None
    deepspeed_config: str | None = None
    deepspeed: bool = False
    save_steps: int = 0
    warmup_steps: int = 100
    weight_decay: float = 0.0
    max_bad_steps: int = 10
    no_seg: bool = False
    image_folder: str | None = None
    lora_preset: str | None = None
    mm_projector_lr: float | None = None
    train_embeddings: bool = True
    train_modules: str = ""
    lr_scales: str = ""
    strict_data: bool = False
    wandb: bool = False
    max_steps: int = 0
    protocol: str = "teacher"
    all_queries: bool = False
    save_masks: str | None = None
    max_new_tokens: int = 32
    tag: str | None = None
    lr_scheduler: str = "warmup_decay"
    warmup_ratio: float | None = None
    epoch_over_data: bool = False
    group_by_modality_length: bool = False
    image_aspect_ratio: str = "square"
    bits: int = 16
    # ---- derived by resolve() ---------------------------------------------------------------
    lora_targets: list[str] = field(default_factory=list, init=False)
    train_prefixes: list[str] = field(default_factory=list, init=False)
    lr_scale_list: list[tuple[str, float]] = field(default_factory=list, init=False)
