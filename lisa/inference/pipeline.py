"""``LisaPipeline``: image + instruction -> answer text and boolean masks at the original image size.

Like segment-anything's ``SamPredictor``, an image is encoded once (CLIP features and the SAM image
embedding) and reused for every later query or turn on the same image.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..constants import IMAGE_TOKEN, SEG_TOKEN
from ..conversation import get_template, image_placeholder
from ..model.generation import use_decoding_layout
from ..precision import default_precision
from ..preprocess import as_rgb_array, clip_preprocess, sam_preprocess
from .answer import answer, encode
from .cache import EncodingCache, ImageEncoding, image_key

MAX_PROMPT_CHARS = 4000


class PromptError(ValueError):
    """The prompt cannot be answered as given (empty, too long, or more than the model's context)."""


@dataclass
class LisaResult:
    text: str
    masks: list[np.ndarray]  # bool [H, W] per [SEG] of this turn, in order
    output_ids: list[int] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    cache_hit: bool = False

    @property
    def mask_areas(self) -> list[int]:
        return [int(m.sum()) for m in self.masks]


def pick_device(device: str | None = "auto") -> torch.device:
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA GPU")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps was asked for but the Apple GPU backend is not available")
    return torch.device(device)


class LisaPipeline:
    def __init__(self, model, tokenizer, conv_type: str = "llava_v1", max_new_tokens: int = 512,
                 cache_size: int = 8, model_max_length: int | None = None):
        self.model = model.eval()
        use_decoding_layout(self.model)
        self.tokenizer = tokenizer
        self.conv_type = conv_type
        get_template(conv_type)  # validate
        self.max_new_tokens = max_new_tokens
        self.cache = EncodingCache(cache_size)
        self.model_max_length = model_max_length or getattr(tokenizer, "model_max_length", 512)
        self.lock = threading.RLock()

    @classmethod
    def from_pretrained(cls, path, *, precision: str | None = None, device: str | None = "auto",
                        vision_tower: str | None = None, sam_config: str | None = None,
                        load_in_4bit: bool = False, load_in_8bit: bool = False, conv_type: str = "llava_v1",
                        max_new_tokens: int = 512, model_max_length: int = 512, cache_size: int = 8,
                        progress: bool = True) -> "LisaPipeline":
        from ..checkpoint.loader import load_pretrained

        dev = pick_device(device)
        if precision is None:
            precision = default_precision(dev.type == "cuda")
        if load_in_4bit and load_in_8bit:
            raise ValueError("choose one of --load_in_4bit and --load_in_8bit")
        quant = "4bit" if load_in_4bit else "8bit" if load_in_8bit else None
        if quant and precision == "fp32" and dev.type == "cuda":
            precision = "fp16"
        model, tokenizer = load_pretrained(path, vision_tower=vision_tower, sam_config_file=sam_config,
                                           precision=precision, device=dev, quantization=quant,
                                           model_max_length=model_max_length, progress=progress)
        return cls(model, tokenizer, conv_type, max_new_tokens, cache_size, model_max_length)

    @property
    def device(self) -> torch.device:
        return self.model.llm.get_input_embeddings().weight.device

    # ---- image encoding ---------------------------------------------------------------------
    def encode_image(self, image, key: str | None = None) -> tuple[ImageEncoding, bool]:
        """The image's encoding (from the cache when it holds it) and whether it was cached. ``key``:
        its :func:`~lisa.inference.cache.image_key`, when the caller has computed it already."""
        arr = as_rgb_array(image)
        key = key or image_key(arr)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        cfg = self.model.config
        t0 = time.perf_counter()
        clip_px = clip_preprocess(arr, cfg.clip_image_size)[None]
        t1 = time.perf_counter()
        sam_in = sam_preprocess(arr, cfg.sam_image_size) if cfg.has_seg_head else None
        t2 = time.perf_counter()
        enc = encode(self.model, clip_px, sam_in.pixels[None] if sam_in else None,
                     sam_in.resize if sam_in else (0, 0), arr.shape[:2], key)
        enc.timings["vision_tower"] += t1 - t0  # each encoder's time includes its preprocessing
        enc.timings["sam_encoder"] += t2 - t1
        self.cache.put(enc)
        return enc, False

    # ---- prompting --------------------------------------------------------------------------
    def build_prompt(self, prompt: str, history: list[tuple[str, str]] | None = None) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError("the prompt is empty")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise PromptError(f"the prompt is too long ({len(prompt)} characters, at most {MAX_PROMPT_CHARS})")
        conv = get_template(self.conv_type)
        turns = list(history or []) + [(prompt, None)]
        for i, (user, reply) in enumerate(turns):
            user = user.replace(IMAGE_TOKEN, "").strip() if i == 0 else user
            if i == 0:
                user = image_placeholder(self.model.config.mm_use_im_start_end) + "\n" + user
            conv.append_user(user)
            conv.append_assistant(reply)
        return conv.get_prompt()

    def __call__(self, image, prompt: str, history: list[tuple[str, str]] | None = None,
                 max_new_tokens: int | None = None, key: str | None = None) -> LisaResult:
        """Answer ``prompt`` (after the ``(user, assistant)`` turns of ``history``) about ``image``.
        ``key``: the image's ``image_key`` when the caller has it, so the image is hashed once."""
        from ..tokenization import tokenizer_image_token

        with self.lock:
            t_start = time.perf_counter()
            text_prompt = self.build_prompt(prompt, history)
            enc, hit = self.encode_image(image, key)
            ids = tokenizer_image_token(text_prompt, self.tokenizer)
            n_ctx = len(ids) - 1 + enc.clip_feats.shape[0]
            max_pos = int(getattr(self.model.llm.config, "max_position_embeddings", 10**9))
            budget = min(max_new_tokens or self.max_new_tokens, max_pos - n_ctx)
            if budget <= 0:
                raise PromptError(f"the prompt uses {n_ctx} positions; the model allows {max_pos}")
            # [SEG]s of earlier turns were answered then: only this turn's (typed or generated) count
            n_old = sum(u.count(SEG_TOKEN) + (a or "").count(SEG_TOKEN) for u, a in history or [])
            out = answer(self.model, self.tokenizer, ids, enc, max_new_tokens=budget,
                         use_prefix=self.cache.max_items > 0, skip_segs=n_old)
            t_mask = time.perf_counter()
            masks: list[np.ndarray] = []
            if out.mask_logits is not None:
                masks = [m.cpu().numpy() for m in (out.mask_logits > 0)]
            gen = out.generated
            timings = {
                "vision_tower": 0.0 if hit else enc.timings["vision_tower"],
                "sam_encoder": 0.0 if hit else enc.timings["sam_encoder"],
                "prefill": gen.timings["prefill"],
                "decode": gen.timings["decode"],
                "tokens": len(gen.new_ids),
                "per_token": gen.token_times,
                "mask_decode": out.mask_seconds + time.perf_counter() - t_mask,
                "total": time.perf_counter() - t_start,
            }
            return LisaResult(out.text, masks, gen.new_ids, timings, hit)
