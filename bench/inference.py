"""Per-query inference latency: first query on an image, a follow-up on the same image, and a breakdown.

    python bench/inference.py --preset medium --threads 2 --baseline    # the CPU target configuration
    python bench/inference.py --preset lisa7b --device cuda --precision bf16 --tokens 10 --baseline
    python bench/inference.py --preset lisa7b --device cuda --precision bf16 --eager   # to compare

Weights are random (built from configs): latency does not depend on the values. Decoding is forced to
run exactly --tokens steps (no early EOS), and one mask is decoded per query as if one [SEG] was
produced. Like LisaPipeline, the first query on an image also caches the KV of the prompt opening
(system prompt + image), so a follow-up only prefills its own question.

The fast path is the default, as LisaPipeline runs it: on CUDA the static-cache decode with its
step under a CUDA graph and the compiled SAM/CLIP encoders (warmed up before timing; the warm-up
seconds are printed); on CPU the eager decode with the column-major weights and the allocator
policy. ``--eager`` (or ``--no_compile``) times the eager path instead; ``--decode static`` runs the
static cache without a graph (anywhere). ``--baseline`` also times the original LISA algorithm on
the same model (every new token re-runs the whole sequence including the vision tower; SAM
re-encodes the image on every query), before anything else, in the plain process state.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

import numpy as np
import torch

from lisa.constants import IMAGE_TOKEN_INDEX
from lisa.model.allocator import reuse_freed_memory
from lisa.model.compiled import compile_encoders
from lisa.model.config import LisaConfig
from lisa.model.generation import build_prefix, generate, image_prefix_length, use_decoding_layout
from lisa.model.lisa import LisaForSegmentation
from lisa.model.sam import sam_config
from lisa.model.sam_attention import BandedRelPosAttention
from lisa.model.splice import splice_image_features
from lisa.model.static_decode import make_fast_decoding
from lisa.precision import to_dtype
from lisa.preprocess import clip_preprocess, postprocess_masks, sam_preprocess

PRESETS = {
    "tiny": dict(llm=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4),
                 clip=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=56, patch_size=14),
                 sam=dict(image_size=128, patch_size=16, window_size=4, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=2, global_attn_indexes=[1], prompt_dim=32, decoder_mlp_dim=64,
                          decoder_heads=2), vocab=403),
    "medium": dict(llm=dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8),
                   clip=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                             image_size=224, patch_size=14),
                   sam=dict(image_size=1024, patch_size=16, window_size=14, hidden_size=256, num_hidden_layers=4,
                            num_attention_heads=4, global_attn_indexes=[1, 3], prompt_dim=256), vocab=32004),
    "lisa7b": dict(llm=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32),
                   clip=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                             image_size=224, patch_size=14),
                   sam=dict(preset="vit_h"), vocab=32004),
    "lisa13b": dict(llm=dict(hidden_size=5120, intermediate_size=13824, num_hidden_layers=40, num_attention_heads=40),
                    clip=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=224, patch_size=14),
                    sam=dict(preset="vit_h"), vocab=32004),
}


def build(preset: str, dtype: torch.dtype, device: str, quant: str | None = None) -> LisaForSegmentation:
    """The preset with random weights; ``quant`` ("4bit", "8bit"): the LLM decoder's linear layers
    through bitsandbytes as LisaPipeline loads them (built on the CPU first, quantized on the move)."""
    p = PRESETS[preset]
    llm = dict(model_type="llama", vocab_size=p["vocab"], max_position_embeddings=2048, rms_norm_eps=1e-6,
               num_key_value_heads=p["llm"]["num_attention_heads"], **p["llm"])
    clip = dict(model_type="clip_vision_model", hidden_act="quick_gelu", **p["clip"])
    sam = sam_config(**p["sam"]).to_dict()
    cfg = LisaConfig(llm=llm, vision=clip, sam=sam, mm_hidden_size=clip["hidden_size"],
                     out_dim=sam["prompt_encoder_config"]["hidden_size"])
    from transformers.initialization import no_init_weights
    with torch.device("cpu" if quant else device), no_init_weights():
        model = LisaForSegmentation(cfg, seg_token_id=p["vocab"] - 1)
    for prm in model.parameters():
        prm.data.normal_(0, 0.02)
    model = model.to(dtype)
    if quant:
        from lisa.model.quantize import quantize_llm

        quantize_llm(model, quant, device)  # sets model.quantization: no graph for these layers
    return model.eval()


def memory_report(device: str) -> str:
    """The footprint as users see it: on CUDA what torch holds for tensors (allocated), what its
    caching allocator took from the driver (reserved) and what the driver reports for this process
    (nvidia-smi's figure, which adds the CUDA context); on a CPU the process' peak resident set."""
    if not device.startswith("cuda"):
        import resource

        return f"peak resident set {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    dev = torch.device(device)
    parts = [f"allocated {torch.cuda.memory_allocated(dev) / 2**30:.2f} GiB "
             f"(peak {torch.cuda.max_memory_allocated(dev) / 2**30:.2f})",
             f"reserved {torch.cuda.memory_reserved(dev) / 2**30:.2f} GiB "
             f"(peak {torch.cuda.max_memory_reserved(dev) / 2**30:.2f})"]
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=30).stdout
        rows = [line.split(",") for line in out.splitlines()]
        mine = [used.strip() for pid, used, *_ in rows if pid.strip() == str(os.getpid())]
        parts.append(f"nvidia-smi {int(mine[0]) / 1024:.2f} GiB" if mine else "nvidia-smi: this process not listed")
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        parts.append("nvidia-smi not available")
    return ", ".join(parts)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def query(model, image, ids, n_tokens, device, cache=None, fast=None):
    """One query the way LisaPipeline runs it; returns the timing breakdown."""
    t = {"vision_tower": 0.0, "sam_encoder": 0.0, "prefix": 0.0}
    t0, c0 = time.perf_counter(), time.process_time()
    if cache is None:
        clip_px = clip_preprocess(image, model.config.clip_image_size)[None].to(device)
        feats = model.encode_clip(clip_px)[0]
        sync(device)
        t1 = time.perf_counter()
        sam_in = sam_preprocess(image, model.config.sam_image_size, device=device)
        emb = model.encode_sam(sam_in.pixels[None])
        sync(device)
        t2 = time.perf_counter()
        ids_list = ids[0].tolist()
        prefix = build_prefix(model, ids_list[:image_prefix_length(ids_list)], feats)
        sync(device)
        t3 = time.perf_counter()
        cache = (feats, emb, sam_in.resize, prefix)
        t.update(vision_tower=t1 - t0, sam_encoder=t2 - t1, prefix=t3 - t2)
    feats, emb, resize, prefix = cache
    gen = fast.generate(model, ids, feats, max_new_tokens=n_tokens, eos_token_id=None, prefix=prefix) \
        if fast is not None else None
    if gen is None:
        gen = generate(model, ids, feats, max_new_tokens=n_tokens, eos_token_id=None, prefix=prefix)
    sync(device)
    t4 = time.perf_counter()
    seg = model.seg_embeddings(gen.seg_hidden[:1] if gen.seg_hidden.shape[0] else
                               torch.zeros(1, model.config.hidden_size, device=device,
                                           dtype=next(model.llm.parameters()).dtype))
    masks = model.decode_masks(emb, seg, resize, image.shape[:2])
    _ = (masks > 0).cpu()
    sync(device)
    t5 = time.perf_counter()
    t.update(prefill=t["prefix"] + gen.timings["prefill"], decode=gen.timings["decode"], mask_decode=t5 - t4,
             total=t5 - t0, cpu=time.process_time() - c0, token_2=gen.token_times[1], token_last=gen.token_times[-1],
             per_token=statistics.median(gen.token_times))
    return t, cache


@torch.no_grad()
def original_algorithm(model, image, ids, n_tokens, device):
    """The original LISA evaluate(): no KV cache, CLIP and SAM recomputed for every query/step."""
    t0, c0 = time.perf_counter(), time.process_time()
    seq = ids.clone().to(device)
    clip_px = clip_preprocess(image, model.config.clip_image_size)[None].to(device)
    for _ in range(n_tokens):
        feats = model.encode_clip(clip_px)[0]
        sp = splice_image_features(seq, model.llm.get_input_embeddings(), [feats])
        h = model.decoder(inputs_embeds=sp.inputs_embeds, attention_mask=sp.attention_mask).last_hidden_state
        nxt = model.lm_head(h[:, -1]).argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    sam_in = sam_preprocess(image, model.config.sam_image_size)
    emb = model.encode_sam(sam_in.pixels[None].to(device))
    seg = model.seg_embeddings(h[0, -1:])
    _ = (postprocess_masks(model.prompter.decode(emb, seg), sam_in.resize, image.shape[:2],
                           model.config.sam_image_size) > 0).cpu()
    sync(device)
    return time.perf_counter() - t0, time.process_time() - c0


def decode_bytes(model) -> int:
    """Weight bytes one decode step reads: every LLM decoder weight plus the LM head."""
    params = list(model.decoder.layers.parameters()) + list(model.lm_head.parameters())
    return sum(p.numel() * p.element_size() for p in params)


@torch.no_grad()
def stream_bandwidth(model, device, repeats: int = 20) -> float:
    """Bytes per second of a matrix-vector product with the LM head, the largest weight (larger than
    the CPU caches for medium and up): the memory bandwidth a decode step can use."""
    w = model.lm_head.weight
    x = torch.randn(1, w.shape[1], dtype=w.dtype, device=device)
    torch.nn.functional.linear(x, w)
    sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        torch.nn.functional.linear(x, w)
    sync(device)
    return w.numel() * w.element_size() * repeats / (time.perf_counter() - t)


def peak_bandwidth(device: str, given: float | None, measured: float) -> tuple[float, str]:
    """Peak memory bandwidth in bytes/s: given (GB/s), from the GPU's memory clock and bus width,
    or the streaming rate measured here (a CPU has no reliable figure to read)."""
    if given:
        return given * 1e9, "given"
    if device.startswith("cuda"):
        p = torch.cuda.get_device_properties(torch.device(device))
        clock, bus = getattr(p, "memory_clock_rate", 0), getattr(p, "memory_bus_width", 0)
        if clock and bus:  # kHz, bits; double data rate
            return 2 * clock * 1e3 * bus / 8, f"{p.name}: memory clock x bus width"
    return measured, "measured streaming rate"


def row(name, values):
    v = [x * 1000 for x in values]
    return f"{name:<22}{statistics.median(v):>10.1f}{min(v):>10.1f}{max(v):>10.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="medium")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--prompt_tokens", type=int, default=60, help="text tokens around the image token")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    ap.add_argument("--baseline", action="store_true", help="also time the original algorithm")
    ap.add_argument("--eager", action="store_true", help="the eager path: no static cache, graph or compiling")
    ap.add_argument("--no_compile", action="store_true", help="the same as --eager (the flag of chat/app/serve)")
    ap.add_argument("--quant", choices=["4bit", "8bit"], default=None,
                    help="the LLM decoder in bitsandbytes 4-/8-bit, as --load_in_4bit/8bit load it (decodes eagerly)")
    ap.add_argument("--decode", choices=["eager", "static", "graph"], default=None,
                    help="force a decode path (default: what LisaPipeline picks for the device)")
    ap.add_argument("--peak_bandwidth", type=float, default=None,
                    help="GB/s to compare the decode with (default: from the GPU, or measured on a CPU)")
    ap.add_argument("--row_major", action="store_true",
                    help="keep the LLM weights row-major (LisaPipeline stores fp32 CPU weights column-major)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    eager = args.eager or args.no_compile
    dtype = to_dtype(args.precision)
    torch.manual_seed(0)
    model = build(args.preset, dtype, args.device, args.quant)
    rng = np.random.default_rng(0)
    ids = torch.tensor([[1] + rng.integers(3, 300, args.prompt_tokens // 2).tolist() + [IMAGE_TOKEN_INDEX]
                        + rng.integers(3, 300, args.prompt_tokens // 2).tolist()])
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"preset={args.preset} params={n_params:.1f}M device={args.device} precision={args.precision}"
          f"{' quant=' + args.quant if args.quant else ''} "
          f"tokens={args.tokens} threads={torch.get_num_threads()} load average={load}")
    base = []
    if args.baseline:  # first, in the plain process state the original runs in
        BandedRelPosAttention.reuse_bias_buffer = False  # a fresh bias tensor per band, as before
        for _ in range(max(1, args.runs // 2)):
            base.append(original_algorithm(model, rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), ids,
                                           args.tokens, args.device))
        BandedRelPosAttention.reuse_bias_buffer = True
    if not args.row_major:
        use_decoding_layout(model)  # as LisaPipeline does
    reuse_freed_memory()  # as LisaPipeline does
    fast = make_fast_decoding(model, compile=not eager, decode="eager" if eager else args.decode)
    compiled = [] if eager else compile_encoders(model)
    t0 = time.perf_counter()
    query(model, rng.integers(0, 255, (480, 640, 3), dtype=np.uint8), ids, 4, args.device, fast=fast)  # warm-up
    if fast is not None:
        fast.warm_up(ids.shape[1] - 1 + model.config.num_image_tokens + args.tokens)
    warm = time.perf_counter() - t0
    mode = "eager" if fast is None else ("static cache + CUDA graph" if fast.graph else f"static cache ({fast.window})")
    print(f"decode: {mode}; compiled: {', '.join(compiled) or 'nothing'}; warm-up {warm:.1f} s")
    firsts, follows = [], []
    for r in range(args.runs):
        image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        t_first, cache = query(model, image, ids, args.tokens, args.device, fast=fast)
        t_follow, _ = query(model, image, ids, args.tokens, args.device, cache, fast=fast)
        firsts.append(t_first)
        follows.append(t_follow)

    print(f"{'(ms)':<22}{'median':>10}{'min':>10}{'max':>10}")
    print(row("first query", [t["total"] for t in firsts]))
    print(row("follow-up query", [t["total"] for t in follows]))
    print(row("  first, CPU time", [t["cpu"] for t in firsts]))
    print(row("  follow-up, CPU time", [t["cpu"] for t in follows]))
    for key in ("vision_tower", "sam_encoder", "prefill", "per_token", "token_2", "token_last", "mask_decode"):
        print(row(f"  {key}", [t[key] for t in firsts]))
    print(row("  follow-up prefill", [t["prefill"] for t in follows]))
    ratio = statistics.median(t["token_last"] for t in firsts) / statistics.median(t["token_2"] for t in firsts)
    print(f"token {args.tokens} / token 2 cost ratio: {ratio:.2f}")
    per_token = statistics.median(t["per_token"] for t in firsts + follows)
    nbytes, measured = decode_bytes(model), stream_bandwidth(model, args.device)
    peak, source = peak_bandwidth(args.device, args.peak_bandwidth, measured)
    achieved = nbytes / per_token
    print(f"decode reads {nbytes / 1e6:.0f} MB of weights per token in {per_token * 1000:.2f} ms: "
          f"{achieved / 1e9:.1f} GB/s, {100 * achieved / peak:.0f}% of {peak / 1e9:.0f} GB/s ({source}); "
          f"weight streaming measured here {measured / 1e9:.1f} GB/s, so {args.tokens} tokens cost at least "
          f"{args.tokens * nbytes / measured * 1000:.0f} ms")
    if base:
        b, bc = statistics.median(w for w, _ in base), statistics.median(c for _, c in base)
        first = b / statistics.median(t["total"] for t in firsts)
        follow = b / statistics.median(t["total"] for t in follows)
        first_c = bc / statistics.median(t["cpu"] for t in firsts)
        follow_c = bc / statistics.median(t["cpu"] for t in follows)
        print(f"original algorithm (no KV cache, no image cache): {b * 1000:.1f} ms per query "
              f"({bc * 1000:.1f} ms CPU time); speed-up first {first:.1f}x, follow-up {follow:.1f}x "
              f"(in CPU time {first_c:.1f}x, {follow_c:.1f}x). This emulation runs faster than the "
              "original code (measured side by side: it understates the original's time by 25-30%), so the "
              "speed-ups over the real original are that much larger.")
    print(f"memory: {memory_report(args.device)}")


if __name__ == "__main__":
    main()
