"""What the demo trains on and how: data sizes, steps, and the ``lisa train`` flags it turns into."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

STEPS_ENV = "LISA_DEMO_STEPS"  # a smaller step count for CI (tests, `make test`)

# SAM's mask decoder, the [SEG] head, the LLM's embeddings and output layer are trained in full (no
# LoRA): the demo starts from random weights. SAM's encoder is pretrained first, on the shapes' kind
# maps (lisa/demo/pretrain.py, 90 s), and then only its last layer and neck train: the
# lower layers keep what the pretraining taught, and a step costs 18% less than with the whole
# encoder (gIoU 0.851 against 0.847 after 1000 steps at the same learning rate,
# bench/demo_experiment.py).
# The LLM's layers stay at their bag-of-words start (lisa/demo/init_weights.py), and CLIP and the projector
# as they are: the projector starts at zero, so the [SEG] state holds the question only. Letting
# image features into it (training the projector) measured worse in this budget (gIoU 0.40 against
# 0.53 after 500 steps): the mask decoder, which sees the image itself, does the visual part.
# (layers.3 is the last of DEMO_SIZES' 4 encoder layers; lisa train refuses a prefix naming nothing.)
TRAIN_MODULES = ("sam.vision_encoder.layers.3.", "sam.vision_encoder.neck", "sam.mask_decoder",
                 "text_hidden_fcs", "llm.lm_head", "llm.model.embed_tokens")
# The encoder's last layer learns at 0.3x LISA's learning rate: after 1000 steps gIoU 0.861 (0.851 at
# 0.1x, 0.790 at 1x, where it forgets the kinds again; bench/demo_experiment.py).
LR_SCALES = "sam.vision_encoder=0.3"


@dataclass(frozen=True)
class DemoRecipe:
    seed: int = 0
    n_train: int = 1000  # ReasonSeg train images
    n_refer: int = 1000  # RefCOCO-format images (several questions each)
    n_val: int = 200
    n_semantic: int = 1000  # kind maps (Mapillary format) for the SAM encoder's pretraining
    # 700 steps at 2e-3 (90 s at 2 threads) learn kind and area as well as 900 at 1e-3 (128 s), and
    # lisa train learns as much after either (bench/demo.py: gIoU 0.838 against 0.836 after 1000 steps)
    sam_pretrain_steps: int = 700
    sam_pretrain_lr: float = 2e-3
    sam_pretrain_hold: float = 10.0  # weight of the pull keeping the encoder's colour channels
    sam_pretrain_area: float = 0.3  # weight of the shape-area target beside the kind
    # optimizer steps, 0.38-0.43 s each at 2 threads, data loading included (1000 steps end at gIoU
    # 0.836 to 0.855: small changes of float rounding move it that much)
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
