"""Experiment: the demo's SAM encoder pretraining (lisa/demo/pretrain.py) on its own.

    python bench/sam_pretrain.py --data DIR [--steps 700] [--lr 2e-3] --out sam.pt [--hold 10] [--area 0.3] [--open 8]
    python bench/demo_experiment.py --data DIR --sam_init sam.pt --encoder_from 3 --encoder_lr_scale 0.3 ...

Prints the seconds taken and the kind accuracy on the shape pixels over the last 10% of the steps,
and saves SAM's state dict for ``demo_experiment --sam_init``. DIR is a demo data folder
(lisa.demo.run.prepare_all_data); ``--semantic N`` writes N kind maps when it has none.

How the demo's recipe was chosen (issue #5 notes, 1 thread unless said):
- reading kind from all channels, decaying LR: 0.54 after 500 steps; from the 8 open channels
  only with a constant LR: 0.96 after 700 steps; 0.56 after 350 (kind appears late).
- kind only, then LISA training at the full LR: the kind questions stay at 0.30 (the encoder
  forgets it, and the colour channels were overwritten: colour questions fail with it frozen).
  Freezing the gradients of the colour channels instead of the L2 pull: 0.89, colour still lost.
- reading kind from the mask decoder's upscaled pixel features, or classifying kind x colour:
  0.48 after 600 steps.
- ``--hold 10 --area 0``: 0.94 after 700 steps (125 s at 2 threads). With the encoder then
  frozen in LISA training, kind questions 0.81 but positions and sizes lag (gIoU 0.746 after 1300
  steps); at 0.1x the LR 0.836 / cIoU 0.828, kind questions 0.84, smallest shape 0.50.
- ``--area 1 --steps 700``: kind 0.59, area MSE 0.10 SD; LISA at 0.1x: 0.849 / 0.839, largest shape
  0.91 (from 0.72), smallest 0.72, kind questions 0.58.
- ``--area 0.3 --steps 900`` (the demo's until session 9): kind 0.97, area MSE 0.13 SD; LISA at
  0.1x, 800 steps: 0.816 / 0.816 (frozen instead: 0.762); the whole demo (bench/demo.py, 1300
  steps) 0.881 / 0.899.
- the same, LISA for 1000 steps: whole encoder at 0.1x 0.847 / 0.855; only its last layer and
  neck (``--encoder_from 3``, 18% cheaper steps) at 0.1x 0.851 / 0.870, at 0.3x 0.861 / 0.878 (the
  demo's recipe), at 1x 0.790 / 0.768; at 0.3x for 900 steps 0.837 / 0.834; with the token
  embeddings frozen too 0.846 / 0.862; and with a 2-layer mask decoder 0.833 / 0.843.
- shorter pretraining (LISA then as the demo's, 1000 steps, 0.3x): 700 steps at 1e-3 kind 0.74, 800
  steps 0.87; at 2e-3, 600 steps kind 0.94, area MSE 0.19; 700 steps (the demo's since session 9)
  kind 0.96, area MSE 0.14, as 900 at 1e-3: LISA 0.852 / 0.869 here, and in the whole demo
  (bench/demo.py) 0.838 / 0.862 against 0.836 / 0.853 after 900 steps at 1e-3; at 3e-3, 600 steps
  kind 0.97, area MSE 0.18: LISA 0.832 / 0.849 (the smallest shape 0.67).
- the mask loss's dice weight (LISA: 0.5, BCE 2.0; ``demo_experiment --dice_weight``): 1.0 gave
  0.846 / 0.852, 2.0 0.842 / 0.837 after 1000 steps (0.861 / 0.878 at 0.5, under session 8's code).
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
