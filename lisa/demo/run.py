"""``run_demo``: data -> base model -> ``lisa train`` -> ``lisa export`` -> ``lisa eval`` -> two answers.

Layout of ``out`` (default ``./demo_out``)::

    data/      the synthetic data set (ReasonSeg + LLaVA VQA from ``lisa data synth``, RefCOCO shapes,
               Mapillary-format kind maps)
    base/      the demo model before ``lisa train``: initialised, SAM's encoder pretrained on the
               kind maps (a model folder; ``lisa train --version`` reads it)
    runs/demo/ the training run (DeepSpeed checkpoint, train_log.jsonl, config.json)
    model/     the trained model (``lisa chat --version out/model``), with demo.json (recipe, metrics)
               and examples.json (shapes images and questions that ``lisa app`` offers)
    examples/  the example image and its overlays
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..checkpoint.run_folder import LATEST, VAL_LOG
from ..inference.examples import EXAMPLES_FILE
from .recipe import DemoRecipe, default_recipe, train_args

log = logging.getLogger("lisa.demo")
DEMO_FILE = "demo.json"


@dataclass
class DemoResult:
    model_dir: Path
    trained: bool  # False when an existing trained model was reused
    metrics: dict
    examples: list = field(default_factory=list)
    train_seconds: float | None = None
    curve: list = field(default_factory=list)  # [{"step", "train_seconds", "giou", "ciou"}] during training
    generate_metrics: dict | None = None  # --protocol generate on the same val set


def prepare_all_data(data_dir: Path, recipe: DemoRecipe, progress: bool = True) -> dict:
    from .prepare import prepare_data, stamped
    from .refer_shapes import write_refer_shapes
    from .semantic_shapes import write_semantic_shapes

    summary = prepare_data(data_dir, recipe.n_train, recipe.n_val, recipe.seed, progress=progress)
    stamped(data_dir, "demo_refer.json", {"n_images": recipe.n_refer, "seed": recipe.seed},
            lambda: write_refer_shapes(data_dir, recipe.n_refer, recipe.seed, progress=progress))
    stamped(data_dir, "demo_semantic.json", {"n_images": recipe.n_semantic, "seed": recipe.seed},
            lambda: write_semantic_shapes(data_dir, recipe.n_semantic, recipe.seed, progress=progress))
    return summary


def build_base(base_dir: Path, data_dir: Path, recipe: DemoRecipe, progress: bool = True) -> dict:
    """Tokenizer trained on the data's texts + the initialised demo model with its SAM encoder
    pretrained on the kind maps, saved as a model folder. Returns the pretraining's summary."""
    from ..checkpoint.saver import save_pretrained
    from .pretrain import pretrain_sam_encoder
    from .tiny_model import OPEN_CHANNELS, build_demo_model, build_demo_tokenizer, demo_importance

    tok_dir = base_dir.parent / (base_dir.name + ".tokenizer")
    tokenizer = build_demo_tokenizer(data_dir, tok_dir)
    model = build_demo_model(tokenizer, seed=recipe.seed, importance=demo_importance(tokenizer, data_dir),
                             open_channels=OPEN_CHANNELS)
    summary = pretrain_sam_encoder(model, data_dir, recipe.sam_pretrain_steps, lr=recipe.sam_pretrain_lr,
                                   open_channels=OPEN_CHANNELS,
                                   hold=recipe.sam_pretrain_hold, area=recipe.sam_pretrain_area,
                                   seed=recipe.seed, progress=progress)
    save_pretrained(model, tokenizer, base_dir, format="native", progress=False)
    shutil.rmtree(tok_dir, ignore_errors=True)
    summary.pop("loss")
    return summary


def trained_recipe(model_dir: Path) -> dict | None:
    path = model_dir / DEMO_FILE
    if not (model_dir / "config.json").is_file() or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def evaluate_model(model_dir: Path, data_dir: Path, protocols: tuple[str, ...] = ("teacher",),
                   progress: bool = True) -> dict[str, dict]:
    """gIoU / cIoU of a model folder on the demo's ReasonSeg|val with ``lisa eval``'s code, per
    protocol (the model and the val set are loaded once)."""
    from ..checkpoint.loader import load_pretrained
    from ..data import build_val_dataset
    from ..evaluation import evaluate

    model, tokenizer = load_pretrained(model_dir, precision="fp32", device="cpu", progress=False)
    cfg = model.config
    val = build_val_dataset(str(data_dir), "ReasonSeg|val", clip_size=cfg.clip_image_size,
                            sam_size=cfg.sam_image_size, use_mm_start_end=cfg.mm_use_im_start_end)
    results = {}
    for protocol in protocols:
        metrics = evaluate(model.eval(), tokenizer, val, protocol, max_new_tokens=16, progress=progress,
                           name="ReasonSeg|val")
        metrics.pop("samples", None)
        results[protocol] = metrics
    return results


def check_evals(steps: int, evals: int) -> int:
    evals = max(1, min(int(evals), steps))
    if steps % evals:
        raise ValueError(f"{steps} training steps cannot be split into {evals} equal parts between validations")
    return evals


def read_curve(run_dir: Path) -> list[dict]:
    """The run's validations (``val_log.jsonl``): gIoU / cIoU against training seconds."""
    path = Path(run_dir) / VAL_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_and_export(out: Path, recipe: DemoRecipe, progress: bool = True, workers: int = 0, evals: int = 4
                     ) -> dict:
    """Data -> base model -> ``lisa train`` (validating ``evals`` times) -> ``lisa export`` -> both
    evaluation protocols on the exported folder. Returns what ``demo.json`` records."""
    from ..export import export
    from ..train import run as train_run

    data_dir, base_dir, model_dir = out / "data", out / "base", out / "model"
    prepare_all_data(data_dir, recipe, progress)
    pretrain = build_base(base_dir, data_dir, recipe, progress)
    runs = out / "runs"
    shutil.rmtree(runs / "demo", ignore_errors=True)
    args = train_args(recipe, base=str(base_dir), dataset_dir=str(data_dir), log_base_dir=str(runs), workers=workers)
    evals = check_evals(recipe.steps, evals)
    # one "epoch" per validation; the LR schedule covers the whole run as one, but samples are drawn
    # per (epoch, index), so the number of validations changes which samples the run sees (and the
    # scores a little; docs/demo.md)
    args.update(epochs=evals, steps_per_epoch=recipe.steps // evals, no_eval=False)
    t0 = time.perf_counter()
    run_dir = train_run(args)
    wall = time.perf_counter() - t0
    if model_dir.exists():
        shutil.rmtree(model_dir)
    export(run_dir, model_dir, format="native", precision="fp32", tag=LATEST, progress=False)
    # training time = the encoder's pretraining + lisa train's optimizer steps (the curve's clock)
    curve = read_curve(run_dir)
    for point in curve:
        point["train_seconds"] = round(point["train_seconds"] + pretrain["seconds"], 1)
    info = {"recipe": recipe.to_dict(), "threads": torch.get_num_threads(), "curve": curve,
            "sam_pretrain": pretrain, "wall_seconds": round(wall, 1)}
    info["train_seconds"] = curve[-1]["train_seconds"] if curve else round(wall + pretrain["seconds"], 1)
    scores = evaluate_model(model_dir, data_dir, ("teacher", "generate"), progress)
    info["metrics"], info["generate_metrics"] = scores["teacher"], scores["generate"]
    (model_dir / DEMO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    write_model_examples(model_dir)
    return info


def write_model_examples(model_dir: Path) -> None:
    """Shapes images with questions the demo model answers, into the model folder for ``lisa app``."""
    import tempfile

    from ..inference.examples import write_examples
    from .examples import shapes_examples

    with tempfile.TemporaryDirectory(prefix="lisa-demo-examples-") as tmp:
        write_examples(model_dir, shapes_examples(Path(tmp)))


def run_demo(out="demo_out", *, retrain: bool = False, steps: int | None = None, seed: int = 0,
             progress: bool = True, examples: bool = True, workers: int = 0, evals: int = 4,
             overrides: dict | None = None) -> DemoResult:
    """Train (unless ``out/model`` already holds the demo of this recipe), evaluate, answer two
    queries. ``overrides``: recipe fields to change (smaller data for tests, for example)."""
    out = Path(out)
    recipe = default_recipe(seed=seed, steps=steps)
    if overrides:
        recipe = replace(recipe, **overrides)
    check_evals(recipe.steps, evals)
    model_dir = out / "model"
    old = trained_recipe(model_dir)
    trained = retrain or old is None or old.get("recipe") != recipe.to_dict()
    if trained:
        if old is not None and not retrain:
            log.info("the trained demo in %s used another recipe; training again", model_dir)
        info = train_and_export(out, recipe, progress, workers, evals)
    else:
        info = old
        if not (model_dir / EXAMPLES_FILE).is_file():
            write_model_examples(model_dir)
    result = DemoResult(model_dir, trained, info["metrics"], train_seconds=info.get("train_seconds"),
                        curve=info.get("curve", []), generate_metrics=info.get("generate_metrics"))
    if examples:
        from .examples import run_examples

        result.examples = run_examples(model_dir, out / "examples", seed=recipe.seed)
    return result
