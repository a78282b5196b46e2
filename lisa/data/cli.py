"""``lisa data``: ``check`` (walk and report the layout), ``convert-refs`` (refs pickles -> JSON),
``subset`` (filter and sample a LLaVA-format JSON), ``synth`` (the demo's synthetic shapes dataset;
its generator lives with the demo, :mod:`lisa.demo.shapes`)."""

from __future__ import annotations

import argparse
import glob
import os
import sys

from .hybrid import DEFAULTS
from .problems import DataError

USAGE = """usage: lisa data <command> [options]

commands:
  check         walk the dataset layout the training flags would read and report what is there
  convert-refs  convert the REFER refs(*).p pickles to JSON once (read without running code)
  synth         write the synthetic shapes dataset (ReasonSeg + LLaVA formats)
  subset        filter / sample a LLaVA-format JSON into a new one (e.g. the TextVQA items of a mix)
"""


def add_data_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The data flags of the original train_ds.py (same names and defaults) plus the new ones."""
    d = DEFAULTS
    parser.add_argument("--dataset_dir", default=d["dataset_dir"])
    parser.add_argument("--dataset", default=d["dataset"], help='families joined by "||"')
    parser.add_argument("--sample_rates", default=d["sample_rates"], help="one rate per --dataset entry")
    parser.add_argument("--sem_seg_data", default=d["sem_seg_data"])
    parser.add_argument("--refer_seg_data", default=d["refer_seg_data"])
    parser.add_argument("--vqa_data", default=d["vqa_data"],
                        help="name under <dataset_dir>/llava_dataset/ or a path to a LLaVA-format JSON")
    parser.add_argument("--image_folder", default=None,
                        help="images of --vqa_data (default <dataset_dir>/coco/train2017)")
    parser.add_argument("--reason_seg_data", default=d["reason_seg_data"])
    parser.add_argument("--val_dataset", default="ReasonSeg|val")
    parser.add_argument("--explanatory", type=float, default=d["explanatory"])
    parser.add_argument("--num_classes_per_sample", type=int, default=d["num_classes_per_sample"])
    parser.add_argument("--strict_data", action="store_true",
                        help="stop at the first data problem instead of skipping and counting it")
    return parser


def _check(argv: list[str]) -> int:
    from .check import check_layout, format_table

    p = argparse.ArgumentParser(prog="lisa data check", description=(
        "Walk the layout the given flags would read; print each sub-dataset with found/missing, "
        "images, samples and problems. Exits 1 when a requested dataset is unusable."))
    add_data_arguments(p)
    p.add_argument("--no_eval", action="store_true", help="do not check --val_dataset")
    p.add_argument("--deep", action="store_true", help="also decode every image and label map")
    p.add_argument("--show", type=int, default=0, metavar="N",
                   help="write N rendered training samples (image, mask overlay, question, answer)")
    p.add_argument("--show_dir", default="./data_check_samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if not os.path.isdir(args.dataset_dir):
        print(f"lisa data check: --dataset_dir {args.dataset_dir!r} is not a folder", file=sys.stderr)
        return 1
    rows = check_layout(args, deep=args.deep, progress=not args.quiet)
    print(f"dataset_dir: {os.path.abspath(args.dataset_dir)}")
    print(format_table(rows))
    failed = [r for r in rows if r.fails]
    problems = sum(sum(r.problems.values()) for r in rows)
    if args.show > 0:
        _show(args, rows)
    if failed:
        print(f"\n{len(failed)} requested dataset(s) unusable: {', '.join(r.name for r in failed)}")
        return 1
    if args.strict_data and problems:
        print(f"\n{problems} problem(s) found and --strict_data is set: training would stop at the first")
        return 1
    print(f"\nall requested datasets usable ({problems} problem record(s) would be skipped)")
    return 0


def _show(args, rows) -> None:
    from .hybrid import build_train_dataset
    from .render import render_item

    usable = {(r.family, r.name) for r in rows if r.family != "validation" and not r.fails}
    show = dict(vars(args))
    families, rates = [], []
    all_rates = str(args.sample_rates).split(",")
    for k, family in enumerate(f for f in str(args.dataset).split("||") if f):
        key = {"sem_seg": "sem_seg_data", "refer_seg": "refer_seg_data", "vqa": "vqa_data",
               "reason_seg": "reason_seg_data"}.get(family)
        if key is None:
            continue
        names = [n for n in str(getattr(args, key)).split("||") if (family, n) in usable]
        if names and k < len(all_rates):
            show[key] = "||".join(names)
            families.append(family)
            rates.append(all_rates[k])
    if not families:
        print("--show: no usable training dataset to draw from")
        return
    show.update(dataset="||".join(families), sample_rates=",".join(rates), strict_data=False)
    if any(r.name == "explanatory" and r.fails for r in rows):
        show["explanatory"] = -1
    ds = build_train_dataset(show, clip_size=32, sam_size=32, samples_per_epoch=args.show)
    print(f"\nwriting {args.show} rendered samples to {os.path.abspath(args.show_dir)}")
    for i in range(args.show):
        item = ds[i]
        out = render_item(item, os.path.join(args.show_dir, f"sample_{i:03d}.png"))
        print(f"  {out}  <- {item['image_path']}")


def _convert_refs(argv: list[str]) -> int:
    from .safe_pickle import convert_refs, json_path_for

    p = argparse.ArgumentParser(prog="lisa data convert-refs", description=(
        "Convert refs(*).p / grefs(*).p under <dataset_dir>/refer_seg/*/ (or the given files) to "
        "JSON next to them, reading them with a restricted unpickler that refuses anything but plain "
        "data. Readers use the JSON when it exists."))
    p.add_argument("paths", nargs="*", help="pickle files (default: all under --dataset_dir)")
    p.add_argument("--dataset_dir", default=DEFAULTS["dataset_dir"])
    p.add_argument("--overwrite", action="store_true", help="rewrite existing JSON files")
    args = p.parse_args(argv)
    paths = list(args.paths)
    if not paths:
        base = os.path.join(args.dataset_dir, "refer_seg")
        paths = sorted(glob.glob(os.path.join(glob.escape(base), "*", "refs(*).p"))
                       + glob.glob(os.path.join(glob.escape(base), "*", "grefs(*).p")))
        if not paths:
            print(f"lisa data convert-refs: no refs(*).p files under {base}/*/", file=sys.stderr)
            return 1
    status = 0
    for path in paths:
        try:
            existed = json_path_for(path).exists()
            out = convert_refs(path, overwrite=args.overwrite)
            kept = existed and not args.overwrite
            print(f"{path} -> {out}" + (" (exists, kept; --overwrite to rewrite)" if kept else ""))
        except (DataError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "check":
        return _check(rest)
    if command == "convert-refs":
        return _convert_refs(rest)
    if command == "subset":
        from .subset import main as subset_main

        return subset_main(rest)
    if command == "synth":
        from ..demo import shapes

        return int(shapes.main(rest) or 0)
    print(f"lisa data: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
