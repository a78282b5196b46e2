"""Map detector training step: time, peak memory and samples per second for a preset.

    python bench/map_train.py                                  # tiny preset on CPU, batch 4
    python bench/map_train.py --preset tiny --features         # training on precomputed CLIP features
    python bench/map_train.py --preset 7b --fp16 --batch_size 4 --llm_path DIR --vision_path DIR \\
        --qformer_pretrained DIR                               # the users' configuration, on a GPU

One step = forward with the losses (Hungarian matching included), backward, AdamW step, on random
camera tensors and random GT (6 cameras, up to 12 instances per sample). The first ``--warmup`` steps
are not timed; the median of the rest is printed with the range. Peak memory: the GPU's allocator peak
(``torch.cuda.max_memory_allocated``) on a GPU; on CPU the process' peak resident set size, which
includes Python and the libraries. Without a GPU the 7B figures are not measured: the script says so
instead of guessing.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny", choices=["tiny", "7b"])
    ap.add_argument("--batch_size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--features", action="store_true", help="train on precomputed CLIP features (the demo's way)")
    ap.add_argument("--fp16", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--llm_path", default=None)
    ap.add_argument("--vision_path", default=None)
    ap.add_argument("--qformer_pretrained", default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    if args.preset == "7b" and not cuda:
        print("preset 7b: no GPU here, so the 7B fp16 batch-4 memory figure (users' guides: ~23 GB, batch 1 "
              "~10 GB) and its speed are unmeasured. Run this script on a GPU machine with --preset 7b --fp16 "
              "and the model folders.")
        return 0

    from lisa.map.checkpoint import build_map_detector
    from lisa.map.data.batch import collate, random_dataset
    from lisa.map.model.report import trainable_share_line
    from lisa.map.model.stages import apply_stage, parameter_groups

    device = torch.device("cuda" if cuda else "cpu")
    half = torch.float16 if args.fp16 else torch.bfloat16 if args.bf16 else None
    model = build_map_detector(preset=args.preset, llm_path=args.llm_path, vision_path=args.vision_path,
                               qformer_pretrained=args.qformer_pretrained, dtype=half, seed=0).to(device)
    apply_stage(model, 2)
    print(trainable_share_line(model))
    opt = torch.optim.AdamW(parameter_groups(model, 1e-5, 1e-4, 1e-4, 0.0))
    scaler = torch.amp.GradScaler(device.type) if args.fp16 else None
    size = model.config.image_size
    data = random_dataset(args.batch_size, seed=0, image_size=size, max_instances=12)
    batch = collate([data[i] for i in range(args.batch_size)])
    inputs = {"images": batch["images"].to(device)}
    if args.features:
        inputs = {"features": model.encode_images(inputs["images"])}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.warmup + args.steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ctx = torch.autocast(device.type, dtype=half) if half else torch.autocast(device.type, enabled=False)
        with ctx:
            loss = model(**inputs, return_loss=True, targets=batch["targets"])["loss_total"]
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    where = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"preset {args.preset}, batch {args.batch_size}, {'features' if args.features else 'images'}, "
          f"{'fp16' if args.fp16 else 'bf16' if args.bf16 else 'fp32'}, {where}")
    print(f"step time: median {med * 1000:.1f} ms (range {min(times) * 1000:.1f}-{max(times) * 1000:.1f} ms "
          f"over {len(times)} steps)")
    print(f"samples/s: {args.batch_size / med:.2f}")
    if cuda:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    else:
        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
        print(f"peak process memory (RSS): {peak / 2**30:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
