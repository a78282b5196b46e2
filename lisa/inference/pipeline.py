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

from ..constants import IM_END_TOKEN, IM_START_TOKEN, IMAGE_TOKEN, SEG_TOKEN
from ..conversation import get_template
from ..model.generation import build_prefix, generate, image_prefix_length, use_decoding_layout
from ..preprocess import as_rgb_array, clip_preprocess, sam_preprocess
from .cache import EncodingCache, ImageEncoding, image_key

MAX_PROMPT_CHARS = 4000


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
        self.model_dir = None  # the folder it was loaded from (a Hub id's snapshot), when known

    @classmethod
    def from_pretrained(cls, path, *, precision: str | None = None, device: str | None = "auto",
                        vision_tower: str | None = None, sam_config: str | None = None,
                        load_in_4bit: bool = False, load_in_8bit: bool = False, conv_type: str = "llava_v1",
                        max_new_tokens: int = 512, model_max_length: int = 512, cache_size: int = 8,
                        progress: bool = True, revision: str | None = None) -> "LisaPipeline":
        """``path``: a model folder or a Hub id (``owner/name[@revision]``)."""
        from ..checkpoint.hub import resolve_model
        from ..checkpoint.loader import load_pretrained

        dev = pick_device(device)
        if precision is None:
            precision = "bf16" if dev.type == "cuda" else "fp32"
        if load_in_4bit and load_in_8bit:
            raise ValueError("choose one of --load_in_4bit and --load_in_8bit")
        quant = "4bit" if load_in_4bit else "8bit" if load_in_8bit else None
        if quant and precision == "fp32" and dev.type == "cuda":
            precision = "fp16"
        folder = resolve_model(path, revision=revision, progress=progress)
        model, tokenizer = load_pretrained(folder, vision_tower=vision_tower, sam_config_file=sam_config,
                                           precision=precision, device=dev, quantization=quant,
                                           model_max_length=model_max_length, progress=progress)
        pipe = cls(model, tokenizer, conv_type, max_new_tokens, cache_size, model_max_length)
        pipe.model_dir = folder
        return pipe

    @property
    def segments(self) -> bool:
        """Whether the model answers with masks (a LISA model); a plain LLaVA model only talks."""
        return bool(self.model.config.has_seg_head)

    @property
    def device(self) -> torch.device:
        return self.model.llm.get_input_embeddings().weight.device

    # ---- image encoding ---------------------------------------------------------------------
    def encode_image(self, image) -> tuple[ImageEncoding, bool]:
        arr = as_rgb_array(image)
        key = image_key(arr)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        model, cfg, dev = self.model, self.model.config, self.device
        t0 = time.perf_counter()
        clip_px = clip_preprocess(arr, cfg.clip_image_size)[None].to(dev)
        with torch.no_grad():
            clip_feats = model.encode_clip(clip_px)[0]
        t1 = time.perf_counter()
        sam_emb, resize = None, (0, 0)
        if cfg.has_seg_head:
            sam_in = sam_preprocess(arr, cfg.sam_image_size)
            with torch.no_grad():
                sam_emb = model.encode_sam(sam_in.pixels[None].to(dev))
            resize = sam_in.resize
        t2 = time.perf_counter()
        enc = ImageEncoding(key, clip_feats, sam_emb, resize, arr.shape[:2],
                            {"vision_tower": t1 - t0, "sam_encoder": t2 - t1})
        self.cache.put(enc)
        return enc, False

    # ---- prompting --------------------------------------------------------------------------
    def build_prompt(self, prompt: str, history: list[tuple[str, str]] | None = None) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("the prompt is empty")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"the prompt is too long ({len(prompt)} characters, at most {MAX_PROMPT_CHARS})")
        conv = get_template(self.conv_type)
        turns = list(history or []) + [(prompt, None)]
        for i, (user, answer) in enumerate(turns):
            user = user.replace(IMAGE_TOKEN, "").strip() if i == 0 else user
            if i == 0:
                image = IMAGE_TOKEN
                if self.model.config.mm_use_im_start_end:
                    image = IM_START_TOKEN + IMAGE_TOKEN + IM_END_TOKEN
                user = image + "\n" + user
            conv.append_user(user)
            conv.append_assistant(answer)
        return conv.get_prompt()

    def __call__(self, image, prompt: str, history: list[tuple[str, str]] | None = None,
                 max_new_tokens: int | None = None) -> LisaResult:
        from ..tokenization import decode_answer, tokenizer_image_token

        with self.lock:
            t_start = time.perf_counter()
            text_prompt = self.build_prompt(prompt, history)
            enc, hit = self.encode_image(image)
            ids = tokenizer_image_token(text_prompt, self.tokenizer)
            n_ctx = len(ids) - 1 + enc.clip_feats.shape[0]
            max_pos = int(getattr(self.model.llm.config, "max_position_embeddings", 10**9))
            budget = min(max_new_tokens or self.max_new_tokens, max_pos - n_ctx)
            if budget <= 0:
                raise ValueError(f"the prompt uses {n_ctx} positions; the model allows {max_pos}")
            input_ids = torch.tensor([ids], dtype=torch.long)
            n_prefix = image_prefix_length(ids)
            t_prefix = time.perf_counter()
            if self.cache.max_items > 0 and n_prefix and (enc.prefix is None or not enc.prefix.matches(ids)):
                enc.prefix = build_prefix(self.model, ids[:n_prefix], enc.clip_feats)
            t_prefix = time.perf_counter() - t_prefix
            gen = generate(self.model, input_ids, enc.clip_feats, max_new_tokens=budget,
                           eos_token_id=self.tokenizer.eos_token_id, prefix=enc.prefix)
            t_mask = time.perf_counter()
            masks: list[np.ndarray] = []
            # [SEG]s of earlier turns were answered then: only this turn's (typed or generated) count
            n_old = sum(u.count(SEG_TOKEN) + (a or "").count(SEG_TOKEN) for u, a in history or [])
            seg_hidden = gen.seg_hidden[n_old:]
            if self.model.config.has_seg_head and seg_hidden.shape[0]:
                with torch.no_grad():
                    emb = self.model.seg_embeddings(seg_hidden)
                    logits = self.model.decode_masks(enc.sam_embedding, emb, enc.resize, enc.original_size)
                masks = [m.cpu().numpy() for m in (logits > 0)]
            t_end = time.perf_counter()
            new_ids = [i for i in gen.new_ids if i != self.tokenizer.eos_token_id]
            text = decode_answer(self.tokenizer, new_ids).replace("</s>", "").strip()
            timings = {
                "vision_tower": 0.0 if hit else enc.timings["vision_tower"],
                "sam_encoder": 0.0 if hit else enc.timings["sam_encoder"],
                "prefill": t_prefix + gen.timings["prefill"],
                "decode": gen.timings["decode"],
                "tokens": len(gen.new_ids),
                "per_token": gen.token_times,
                "mask_decode": t_end - t_mask,
                "total": t_end - t_start,
            }
            return LisaResult(text, masks, gen.new_ids, timings, hit)
