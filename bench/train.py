"""Training throughput (samples per second) and peak memory of `lisa train`'s step for a model shape.

    python bench/train.py                                    # tiny model on CPU (default)
    python bench/train.py --preset lisa7b --precision bf16   # LISA-7B shapes on a GPU

Weights are random (built from configs, nothing is downloaded): throughput does not depend on the
values. The step is the real one: LoRA injected as `lisa train` does, the trainable parts of the
original, DeepSpeed ZeRO-2 with the built-in config, the data layer's ReasonSeg + LLaVA readers and
collation on a synthetic data set (`lisa.demo.shapes`), gradient checkpointing. A "sample" is one
image (with its up to 3 conversations), as the original counts it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from inference import PRESETS  # noqa: E402  (bench/ is on sys.path when run as a script)


def build_model(preset: str, dtype: torch.dtype, device: torch.device, seg_id: int):
    from transformers.initialization import no_init_weights

    from lisa.model.config import LisaConfig
    from lisa.model.lisa import LisaForSegmentation
    from lisa.model.sam import sam_config

    p = PRESETS[preset]
    llm = dict(model_type="llama", vocab_size=p["vocab"], max_position_embeddings=2048, rms_norm_eps=1e-6,
               num_key_value_heads=p["llm"]["num_attention_heads"], tie_word_embeddings=False, **p["llm"])
    clip = dict(model_type="clip_vision_model", hidden_act="quick_gelu", **p["clip"])
    sam = sam_config(**p["sam"]).to_dict()
    cfg = LisaConfig(llm=llm, vision=clip, sam=sam, mm_hidden_size=clip["hidden_size"],
                     out_dim=sam["prompt_encoder_config"]["hidden_size"])
    with torch.device(device), no_init_weights():
        model = LisaForSegmentation(cfg, seg_token_id=seg_id)
    with torch.no_grad():
        for prm in model.parameters():
            prm.normal_(0, 0.02)
    return model.to(dtype)


def peak_memory(device: torch.device) -> dict:
    out = {"cpu_max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device.type == "cuda":
        out["gpu_max_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["gpu_max_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--precision", default=None, choices=["fp32", "bf16", "fp16"],
                    help="default: bf16 on a GPU, fp32 on CPU")
    ap.add_argument("--batch_size", type=int, default=2)
    ap.add_argument("--grad_accumulation_steps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    ap.add_argument("--lora_r", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--images", type=int, default=48, help="synthetic training images to write")
    ap.add_argument("--no_gradient_checkpointing", action="store_true")
    ap.add_argument("--json", default=None, help="also write the result here")
    a = ap.parse_args(argv)

    from lisa import dist
    from lisa.checkpoint.run_folder import TRAIN_LOG
    from lisa.checkpoint.tiny import TINY_TEXTS
    from lisa.demo.shapes import write_dataset
    from lisa.precision import default_precision, to_dtype
    from lisa.tokenization import add_lisa_tokens, train_llama_style_tokenizer
    from lisa.train.args import namespace
    from lisa.train.data import build_dataset, make_collate
    from lisa.train.engine import create_engine
    from lisa.train.loop import Trainer
    from lisa.train.model_setup import LoraSettings, apply_lora, count_parameters, enable_checkpointing, set_trainable

    precision = a.precision or default_precision()
    dtype = to_dtype(precision)
    tmp = Path(tempfile.mkdtemp(prefix="lisa_bench_train_"))
    write_dataset(tmp / "data", n_train=a.images, n_val=0, seed=0, progress=False)
    tok = train_llama_style_tokenizer(TINY_TEXTS, 400, tmp / "tok")
    seg_id = add_lisa_tokens(tok)
    args = namespace(version="(random)", dataset_dir=str(tmp / "data"), dataset="reason_seg||vqa",
                     sample_rates="3,1", reason_seg_data="ReasonSeg|train", vqa_data="synth_vqa",
                     batch_size=a.batch_size, grad_accumulation_steps=a.grad_accumulation_steps,
                     precision=precision, workers=a.workers, epochs=1, steps_per_epoch=a.warmup + a.steps,
                     lora_r=a.lora_r, log_base_dir=str(tmp), exp_name="bench", no_eval=True,
                     warmup_steps=2, print_freq=10**9, explanatory=-1)
    dist.init_deepspeed_distributed()
    device = dist.device()
    t0 = time.perf_counter()
    model = build_model(a.preset, dtype, device, seg_id)
    build_s = time.perf_counter() - t0
    model.train()
    if not a.no_gradient_checkpointing:
        enable_checkpointing(model.llm)
    apply_lora(model, LoraSettings(a.lora_r, 2 * a.lora_r, 0.05, ["q_proj", "v_proj"]))
    set_trainable(model)
    total, trainable = count_parameters(model)
    engine, _ = create_engine(model, args)
    dataset = build_dataset(args, model.config, 0)
    collate = make_collate(args, tok, model.config)
    lengths = [int(collate([dataset[i]])["attention_mask"].sum(1).float().mean())
               for i in range(4)]
    timed: list[dict] = []

    def on_step(trainer):
        if trainer.state["global_step"] == a.warmup and device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        if trainer.state["global_step"] > a.warmup:
            with open(tmp / "bench" / TRAIN_LOG) as f:
                timed.append(json.loads(f.readlines()[-1]))

    (tmp / "bench").mkdir(exist_ok=True)
    state = {"global_step": 0, "epoch": 0}
    trainer = Trainer(engine, args, tmp / "bench", dataset, collate, dtype, state, on_step=on_step)
    trainer.train_epoch(0, 0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = [r["step_s"] for r in timed]
    images = a.batch_size * a.grad_accumulation_steps * dist.world_size()
    result = {
        "preset": a.preset, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(), "precision": precision, "batch_size": a.batch_size,
        "grad_accumulation_steps": a.grad_accumulation_steps, "world_size": dist.world_size(),
        "params_total_m": total / 1e6, "params_trainable_m": trainable / 1e6,
        "tokens_per_conversation_before_splicing": statistics.mean(lengths),
        "image_tokens": model.config.num_image_tokens, "model_build_s": build_s,
        "step_s_median": statistics.median(per_step), "samples_per_s": images / statistics.median(per_step),
        "losses": [r["loss"] for r in timed], **peak_memory(device),
    }
    print(json.dumps(result, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
