"""Experiment: the demo's SAM encoder pretraining (lisa/demo/pretrain.py) on its own.

    python bench/sam_pretrain.py --data DIR [--steps 700] [--lr 2e-3] --out sam.pt [--hold 10] [--area 0.3] [--open 8]
    python bench/demo_experiment.py --data DIR --sam_init sam.pt --encoder_from 3 --encoder_lr_scale 0.3 ...

Prints the seconds taken and the kind accuracy on the shape pixels over the last 10% of the steps,
and saves SAM's state dict for ``demo_experiment --sam_init``. DIR is a demo data folder
(lisa.demo.run.prepare_all_data); ``--semantic N`` writes N kind maps when it has none.

What each setting gave, and how the demo's recipe was chosen: docs/demo.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lisa.demo.pretrain import SEMANTIC_SET, pretrain_sam_encoder
from lisa.demo.recipe import DemoRecipe
from lisa.demo.semantic_shapes import write_semantic_shapes
from lisa.demo.tiny_model import OPEN_CHANNELS, build_demo_model, build_demo_tokenizer, demo_importance

RECIPE = DemoRecipe()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the demo data folder (lisa.demo.run.prepare_all_data)")
    ap.add_argument("--steps", type=int, default=RECIPE.sam_pretrain_steps)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=RECIPE.sam_pretrain_lr)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--semantic", type=int, default=1000, help="kind maps to write when DATA has none")
    ap.add_argument("--open", type=int, default=OPEN_CHANNELS,
                    help="open_channels of the SAM init (lisa.demo.init_weights)")
    ap.add_argument("--hold", type=float, default=10.0,
                    help="weight of the L2 pull keeping the colour/constant/position outputs as the init's")
    ap.add_argument("--area", type=float, default=0.3, help="weight of the shape-area target (0: kind only)")
    ap.add_argument("--out", required=True, help="where to save SAM's state dict (for demo_experiment --sam_init)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    semantic = Path(args.data) / SEMANTIC_SET
    has_instances = (semantic / "training" / "v2.0" / "instances").is_dir()
    if not (semantic / "config_v2.0.json").is_file() or (args.area and not has_instances):
        write_semantic_shapes(args.data, args.semantic, args.seed)
    tok = build_demo_tokenizer(args.data, args.out + ".tok")
    model = build_demo_model(tok, seed=args.seed, importance=demo_importance(tok, args.data),
                             open_channels=args.open)
    summary = pretrain_sam_encoder(model, args.data, args.steps, open_channels=args.open, batch_size=args.batch,
                                   lr=args.lr, hold=args.hold, area=args.area, seed=args.seed)
    print(f"{summary['steps']} steps in {summary['seconds']:.0f} s; over the last 10% of steps kind pixel "
          f"accuracy {summary['final_pixel_accuracy']:.3f}, "
          f"area MSE (in standard deviations) {summary['final_area_mse']}")
    torch.save(model.sam.state_dict(), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
