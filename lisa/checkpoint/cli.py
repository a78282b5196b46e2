"""``lisa make-tiny OUT``: a tiny random checkpoint in the released layout (tests, trying things)."""

from __future__ import annotations

import argparse

from . import tiny
from .tiny_families import LLM_FAMILIES, TOWERS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="lisa make-tiny", description=tiny.__doc__.splitlines()[0])
    ap.add_argument("out", help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", choices=["lisa", "native"], default="lisa",
                    help="released LISA layout (.bin, CLIP as a subfolder) or our safetensors format")
    ap.add_argument("--shard_size", default=None, help="e.g. 200KB to write several shards with an index")
    ap.add_argument("--llava", choices=list(tiny.LLAVA_VERSIONS), default=None,
                    help="write a tiny base LLaVA model instead (what `lisa train --version` starts from)")
    ap.add_argument("--llm", choices=list(LLM_FAMILIES), default="llama",
                    help="with --llava: the language model's family (llama3: rope scaling and a byte-level "
                    "tokenizer; qwen2: byte-level, no BOS, grouped-query attention)")
    ap.add_argument("--tower", choices=list(TOWERS), default="clip", help="with --llava: the vision tower")
    args = ap.parse_args(argv)
    if args.llava:
        tiny.make_tiny_llava(args.out, seed=args.seed, version=args.llava, llm=args.llm, tower=args.tower)
        print(f"wrote a tiny LLaVA {args.llava} checkpoint ({args.llm}, {args.tower}) to {args.out}")
        return 0
    tiny.make_tiny(args.out, seed=args.seed, format=args.format, shard_size=args.shard_size)
    print(f"wrote a tiny LISA checkpoint to {args.out}")
    return 0
