"""What the demo trains on and how: data sizes, steps, and the ``lisa train`` flags it turns into.

How each choice was measured (and what was tried instead) is in docs/demo.md.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

STEPS_ENV = "LISA_DEMO_STEPS"  # a smaller step count for CI (tests, `make test`)

# SAM's mask decoder, the [SEG] head, the LLM's embeddings and output layer are trained in full (no
# LoRA): the demo starts from random weights. SAM's encoder is pretrained first, on the shapes' kind
# maps (lisa/demo/pretrain.py), and then only its last layer and neck train: the lower layers keep
# what the pretraining taught, and a step is cheaper than with the whole encoder.
# The LLM's layers stay at their bag-of-words start (lisa/demo/init_weights.py), and CLIP and the
# projector as they are: the projector starts at zero, so the [SEG] state holds the question only;
# the mask decoder, which sees the image itself, does the visual part (training the projector
# learned less in this budget).
# (layers.3 is the last of DEMO_SIZES' 4 encoder layers; lisa train refuses a prefix naming nothing.)
TRAIN_MODULES = ("sam.vision_encoder.layers.3.", "sam.vision_encoder.neck", "sam.mask_decoder",
                 "text_hidden_fcs", "llm.lm_head", "llm.model.embed_tokens")
# The encoder's last layer learns at 0.3x LISA's learning rate: at the full rate it forgets the kinds
# the pretraining taught, at 0.1x it adapts too little.
LR_SCALES = "sam.vision_encoder=0.3"


@dataclass(frozen=True)
class DemoRecipe:
    seed: int = 0
    n_train: int = 1000  # ReasonSeg train images
    n_refer: int = 1000  # RefCOCO-format images (several questions each)
    n_val: int = 200
    n_semantic: int = 1000  # kind maps (Mapillary format) for the SAM encoder's pretraining
    # 700 steps at 2e-3 learn kind and area as well as 900 at 1e-3, in less time
    sam_pretrain_steps: int = 700
    sam_pretrain_lr: float = 2e-3
    sam_pretrain_hold: float = 10.0  # weight of the pull keeping the encoder's colour channels
    sam_pretrain_area: float = 0.3  # weight of the shape-area target beside the kind
    # optimizer steps of lisa train (where the accuracy after a fixed number of steps moves with float
    # rounding, 100 more steps keep the demo above its target)
    steps: int = 1100
    batch_size: int = 8  # images per step
    texts_per_image: int = 8  # num_classes_per_sample
    sample_rates: str = "1,1"  # reason_seg, refer_seg
    lr: float = 1e-3
    lr_scales: str = LR_SCALES
    warmup_steps: int = 50
    ce_loss_weight: float = 1.0
    train_modules: tuple[str, ...] = TRAIN_MODULES

    def to_dict(self) -> dict:
        d = asdict(self)
        d["train_modules"] = list(self.train_modules)
        return d


def default_recipe(seed: int = 0, steps: int | None = None) -> DemoRecipe:
    """The default demo, with ``steps`` (or ``$LISA_DEMO_STEPS``) replacing the step count of
    ``lisa train``; the encoder's pretraining shortens in proportion."""
    recipe = DemoRecipe(seed=seed)
    if steps is None and os.environ.get(STEPS_ENV):
        try:
            steps = int(os.environ[STEPS_ENV])
        except ValueError:
            raise ValueError(f"${STEPS_ENV} must be an integer, got {os.environ[STEPS_ENV]!r}") from None
    if steps is not None:
        if steps < 1:
            raise ValueError(f"the number of training steps must be >= 1, got {steps}")
        pretrain = max(1, round(recipe.sam_pretrain_steps * steps / recipe.steps))
        recipe = replace(recipe, steps=int(steps), warmup_steps=min(recipe.warmup_steps, max(1, steps // 10)),
                         sam_pretrain_steps=min(recipe.sam_pretrain_steps, pretrain))
    return recipe


def train_args(recipe: DemoRecipe, *, base: str, dataset_dir: str, log_base_dir: str, exp_name: str = "demo",
               workers: int = 0) -> dict:
    """The ``lisa train`` flags (as a dict for :func:`lisa.train.run`) of the demo's training."""
    return {
        "version": str(base), "dataset_dir": str(dataset_dir), "log_base_dir": str(log_base_dir),
        "exp_name": exp_name, "precision": "fp32", "seed": recipe.seed,
        "dataset": "reason_seg||refer_seg", "sample_rates": recipe.sample_rates,
        "reason_seg_data": "ReasonSeg|train", "refer_seg_data": "refcoco", "explanatory": -1,
        "val_dataset": "ReasonSeg|val", "no_eval": True,
        "epochs": 1, "steps_per_epoch": recipe.steps, "batch_size": recipe.batch_size,
        "grad_accumulation_steps": 1, "num_classes_per_sample": recipe.texts_per_image,
        "lr": recipe.lr, "lr_scales": recipe.lr_scales, "warmup_steps": recipe.warmup_steps,
        "ce_loss_weight": recipe.ce_loss_weight,
        "lora_r": 0, "train_modules": ",".join(recipe.train_modules),
        "gradient_checkpointing": False, "auto_resume": False, "workers": workers,
        "model_max_length": 512, "print_freq": 10,
    }
