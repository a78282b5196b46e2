"""``run_map_demo``: synthetic town -> GT caches -> tiny detector trained by ``lisa map train``'s loop ->
held-out Chamfer AP, against the untrained detector and the average-map baseline.

Layout of ``out`` (default ``./map_demo_out``)::

    data/               the synthetic nuScenes tree (``lisa map synth``), its split.json and GT caches
    runs/demo/          the training run (config.json, train_log.jsonl, val_log.jsonl, checkpoints)
    model/              the trained detector (``lisa map predict --checkpoint out/model``), demo.json
    learning_curve.png  held-out mAP against training seconds
    example_bev.png     a held-out sample's prediction over its GT

The frozen CLIP tower's features are computed once per sample and training runs on them (the same
numbers as running CLIP in every step); the final evaluation loads the saved detector and runs it on
the camera images, CLIP included.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .recipe import MapDemoRecipe, default_recipe

log = logging.getLogger("lisa.map.demo")
DEMO_FILE = "demo.json"
VERSION = "v1.0-mini"
TARGET = 0.30


@dataclass
class MapDemoResult:
    model_dir: Path
    trained: bool
    metrics: dict  # the trained detector's held-out metrics (part 1's evaluator)
    untrained: dict
    baseline: dict
    curve: list = field(default_factory=list)
    train_seconds: float | None = None
    curve_png: Path | None = None
    example_png: Path | None = None
    example_token: str | None = None


def prepare_data(data_dir: Path, recipe: MapDemoRecipe, progress: bool = True):
    """The synthetic tree (written once per data recipe) and its train / val GT caches."""
    from ..inference.gt_cache import load_or_build_gt
    from ..synth import SynthOptions, write_synthetic_tree

    stamp = data_dir / "demo_data.json"
    want = {k: recipe.to_dict()[k] for k in ("scenes", "samples_per_scene", "val_fraction", "image_size", "seed")}
    have = json.loads(stamp.read_text()) if stamp.is_file() else None
    if have != want:
        if data_dir.exists():
            shutil.rmtree(data_dir)
        t0 = time.perf_counter()
        write_synthetic_tree(SynthOptions(str(data_dir), recipe.scenes, recipe.samples_per_scene, recipe.val_fraction,
                                          VERSION, image_size=tuple(recipe.image_size), seed=recipe.seed,
                                          progress=progress))
        stamp.write_text(json.dumps(want))
        log.info("synthetic town written in %.0f s", time.perf_counter() - t0)
    split = str(data_dir / "split.json")
    train = load_or_build_gt(data_dir, VERSION, "train", split, progress=progress)
    val = load_or_build_gt(data_dir, VERSION, "val", split, progress=progress)
    return train.samples, val.samples


def _summary(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("mAP", "mAP_all_classes", "class_ap", "ap", "num_gt", "num_pred")}


def train_demo(out: Path, recipe: MapDemoRecipe, train_samples, val_samples, progress: bool = True) -> dict:
    from ..checkpoint import build_map_detector
    from ..data.nuscenes import NuScenesMapDataset, precompute_features
    from ..evaluation.detector import evaluate_predictions
    from ..inference.predictor import predict
    from ..train.run import run
    from ..train.sampling import steps_per_epoch
    from .baseline import baseline_predictions

    data_dir = out / "data"
    # the run below builds the same detector from the same seed: these are its CLIP features
    model = build_map_detector(preset="tiny", seed=recipe.seed)
    cfg = model.config
    train = precompute_features(NuScenesMapDataset(data_dir, train_samples, cfg.image_size, cfg.cameras), model,
                                progress=progress)
    val = precompute_features(NuScenesMapDataset(data_dir, val_samples, cfg.image_size, cfg.cameras), model,
                              progress=progress)
    untrained = evaluate_predictions(predict(model, val, 8, progress=False), val_samples)
    baseline = evaluate_predictions(baseline_predictions(train_samples, val_samples, seed=recipe.seed), val_samples)
    del model

    spe = steps_per_epoch(len(train), recipe.batch_size, 1, 1)
    epochs = math.ceil(recipe.steps / spe)
    run_dir = out / "runs" / "demo"
    shutil.rmtree(run_dir, ignore_errors=True)
    opts = dict(preset="tiny", output_dir=str(run_dir), batch_size=recipe.batch_size, epochs=epochs,
                max_steps=recipe.steps, lr_qformer=recipe.lr, lr_queries=recipe.lr, lr_decoder=recipe.lr,
                warmup_steps=recipe.warmup_steps, grad_clip=recipe.grad_clip, noobj_weight=recipe.noobj_weight,
                num_workers=0, seed=recipe.seed,
                eval_epochs=max(1, epochs // max(1, recipe.evals)), log_steps=100, progress=progress)
    t0 = time.perf_counter()
    run(opts, train_set=train, validate=lambda m: evaluate_predictions(predict(m, val, 8, progress=False),
                                                                       val_samples))
    wall = time.perf_counter() - t0
    curve = [json.loads(line) for line in (run_dir / "val_log.jsonl").read_text().splitlines() if line.strip()]
    curve = [{"epoch": c["epoch"], "step": c["step"], "train_seconds": c["train_seconds"], "mAP": c["mAP"]}
             for c in curve]
    model_dir = out / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    shutil.copytree(run_dir / "final_model", model_dir)
    return {"recipe": recipe.to_dict(), "threads": torch.get_num_threads(), "wall_seconds": round(wall, 1),
            "train_seconds": round(curve[-1]["train_seconds"], 1) if curve else None, "curve": curve,
            "untrained": _summary(untrained), "baseline": _summary(baseline)}


def evaluate_model_dir(model_dir: Path, data_dir: Path, val_samples, progress: bool = True) -> dict:
    """The saved detector on the held-out camera images (CLIP included)."""
    from ..checkpoint.io import load_detector
    from ..data.nuscenes import NuScenesMapDataset
    from ..evaluation.detector import evaluate_predictions
    from ..inference.predictor import predict

    model = load_detector(model_dir)
    data = NuScenesMapDataset(data_dir, val_samples, model.config.image_size, model.config.cameras)
    return _summary(evaluate_predictions(predict(model, data, 8, progress=progress), val_samples))


def _trained_info(model_dir: Path) -> dict | None:
    path = model_dir / DEMO_FILE
    if not (model_dir / "model.safetensors").is_file() or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def run_map_demo(out="map_demo_out", *, retrain: bool = False, steps: int | None = None, seed: int = 0,
                 progress: bool = True, overrides: dict | None = None) -> MapDemoResult:
    """Train (unless ``out/model`` holds the demo of this recipe), evaluate on the held-out scenes."""
    from dataclasses import replace

    from .curve import draw_curve

    out = Path(out)
    recipe = default_recipe(seed=seed, steps=steps)
    if overrides:
        recipe = replace(recipe, **overrides)
    train_samples, val_samples = prepare_data(out / "data", recipe, progress)
    model_dir = out / "model"
    info = _trained_info(model_dir)
    trained = retrain or info is None or info.get("recipe") != recipe.to_dict()
    if trained:
        info = train_demo(out, recipe, train_samples, val_samples, progress)
    info["metrics"] = evaluate_model_dir(model_dir, out / "data", val_samples, progress)
    (model_dir / DEMO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    points = [(c["train_seconds"], c["mAP"]) for c in info["curve"]]
    curve_png = draw_curve([(0.0, info["untrained"]["mAP"])] + points, out / "learning_curve.png",
                           untrained=info["untrained"]["mAP"], baseline=info["baseline"]["mAP"], target=TARGET)
    example_png, token = None, None
    if val_samples:
        from ..inference.predictor import as_eval_vectors
        from ..inference.sample import predict_sample
        from ..viz.overlay import prediction_picture

        token = val_samples[len(val_samples) // 2].token
        gt, pred = predict_sample(model_dir, out / "data", VERSION, token)
        example_png = out / "example_bev.png"
        prediction_picture(out / "data", gt, as_eval_vectors({token: pred})[token]).save(example_png)
    return MapDemoResult(model_dir, trained, info["metrics"], info["untrained"], info["baseline"], info["curve"],
                         info.get("train_seconds"), curve_png, example_png, token)
