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

from ..constants import IMAGE_TOKEN, IMAGE_TOKEN_INDEX, SEG_TOKEN
from ..conversation import (
    expand_image_token,
    get_template,
    image_placeholder,
    model_name_from_path,
    template_for_model_name,
)
from ..model.generation import use_decoding_layout
from ..precision import default_precision
from ..preprocess import as_rgb_array, sam_preprocess
from .answer import answer, answer_text, encode, seg_masks
from .cache import EncodingCache, ImageEncoding, image_key
from .request import MAX_PROMPT_CHARS, GenerationRequest, Sampling, TextStream

__all__ = ["MAX_PROMPT_CHARS", "LisaPipeline", "LisaResult", "answer_text", "pick_template"]

LLAVA_TEMPERATURE = 0.2  # LLaVA's chat samples at 0.2 by default


class PromptError(ValueError):
    """The prompt cannot be answered as given (empty, too long, or more than the model's context)."""


@dataclass
class LisaResult:
    text: str
    masks: list[np.ndarray]  # bool [H, W] per [SEG] of this turn, in order
    output_ids: list[int] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    cache_hit: bool = False
    finish_reason: str = "stop"  # "length" when the token budget ran out
    prompt_tokens: int = 0

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


def pick_template(model, path=None, conv_type: str | None = None) -> str:
    """The prompt template: ``conv_type`` when given; else the one the model was trained with (our
    training records it); else ``llava_v1`` for LISA models and, given the model's ``path``, for
    plain LLaVA models the mode LLaVA's chat infers from its folder name (``lisa chat`` does; the
    library and the servers keep ``llava_v1``)."""
    if conv_type:
        return conv_type
    if model.config.conv_type:
        return model.config.conv_type
    if model.config.has_seg_head or path is None:
        return "llava_v1"
    return template_for_model_name(model_name_from_path(str(path)))


class LisaPipeline:
    """``temperature`` / ``top_p``: the sampling of calls that do not choose their own (0: greedy)."""

    def __init__(self, model, tokenizer, conv_type: str | None = None, max_new_tokens: int = 512,
                 cache_size: int = 8, model_max_length: int | None = None, temperature: float = 0.0,
                 top_p: float | None = None):
        self.model = model.eval()
        use_decoding_layout(self.model)
        self.tokenizer = tokenizer
        self.conv_type = pick_template(model, None, conv_type)
        get_template(self.conv_type)  # validate
        self.sampling = Sampling(temperature or 0.0, top_p)
        self.max_new_tokens = max_new_tokens
        self.cache = EncodingCache(cache_size)
        self.model_max_length = model_max_length or getattr(tokenizer, "model_max_length", 512)
        self.lock = threading.RLock()
        self.model_dir = None  # the folder it was loaded from (a Hub id's snapshot), when known

    @classmethod
    def from_pretrained(cls, path, *, precision: str | None = None, device: str | None = "auto",
                        vision_tower: str | None = None, sam_config: str | None = None,
                        load_in_4bit: bool = False, load_in_8bit: bool = False, conv_type: str | None = None,
                        max_new_tokens: int = 512, model_max_length: int = 512, cache_size: int = 8,
                        progress: bool = True, revision: str | None = None, temperature: float | None = None,
                        top_p: float | None = None) -> "LisaPipeline":
        """``path``: a model folder or a Hub id (``owner/name[@revision]``). ``temperature`` 0 or None:
        greedy (the default of every caller but ``lisa chat``, see :attr:`chat_temperature`)."""
        from ..checkpoint.hub import resolve_model
        from ..checkpoint.loader import load_pretrained

        dev = pick_device(device)
        if precision is None:
            precision = default_precision(dev.type == "cuda")
        if load_in_4bit and load_in_8bit:
            raise ValueError("choose one of --load_in_4bit and --load_in_8bit")
        quant = "4bit" if load_in_4bit else "8bit" if load_in_8bit else None
        if quant and precision == "fp32" and dev.type == "cuda":
            precision = "fp16"
        folder = resolve_model(path, revision=revision, progress=progress)
        model, tokenizer = load_pretrained(folder, vision_tower=vision_tower, sam_config_file=sam_config,
                                           precision=precision, device=dev, quantization=quant,
                                           model_max_length=model_max_length, progress=progress)
        pipe = cls.for_model(model, tokenizer, conv_type=conv_type, max_new_tokens=max_new_tokens,
                             cache_size=cache_size, model_max_length=model_max_length, temperature=temperature,
                             top_p=top_p)
        pipe.model_dir = folder
        return pipe

    @classmethod
    def for_model(cls, model, tokenizer, path=None, *, conv_type: str | None = None, temperature=None,
                  **kwargs) -> "LisaPipeline":
        """A pipeline around a loaded model with the template of its kind (see :func:`pick_template`)."""
        return cls(model, tokenizer, pick_template(model, path, conv_type), temperature=temperature or 0.0, **kwargs)

    @property
    def kind(self) -> str:
        """"LISA" (answers with masks) or "LLaVA" (text only): how answers are labelled."""
        return "LISA" if self.segments else "LLaVA"

    @property
    def chat_temperature(self) -> float:
        """What ``lisa chat`` samples at without ``--temperature``: 0.2 for plain LLaVA models, as
        LLaVA's ``cli.py``; LISA models answer greedily."""
        return 0.0 if self.segments else LLAVA_TEMPERATURE

    @property
    def segments(self) -> bool:
        """Whether the model answers with masks (a LISA model); a plain LLaVA model only talks."""
        return bool(self.model.config.has_seg_head)

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
        clip_px = cfg.vision_input(arr)[None]
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

    def stop_strings(self) -> tuple[str, ...]:
        """The template's end-of-turn marker when it is not the tokenizer's end of sequence (which
        ends generation anyway): ``<|im_end|>``, ``###``, or a ``</s>`` a byte-level vocabulary spells out."""
        end = get_template(self.conv_type).answer_end
        return (end,) if end and end != self.tokenizer.eos_token else ()

    def __call__(self, image, prompt: str, history: list[tuple[str, str]] | None = None,
                 max_new_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                 on_text=None, key: str | None = None) -> LisaResult:
        """``on_text(piece)`` receives the answer while it is generated; ``temperature`` / ``top_p``
        replace the pipeline's sampling for this call. ``key``: the image's ``image_key`` when the
        caller has it, so the image is hashed once."""
        sampling = self.sampling if temperature is None and top_p is None else Sampling(
            self.sampling.temperature if temperature is None else temperature,
            self.sampling.top_p if top_p is None else top_p)
        return self.run(GenerationRequest(image, prompt, history, max_new_tokens=max_new_tokens, sampling=sampling,
                                          stop=self.stop_strings(), on_text=on_text, key=key))

    def run(self, request: GenerationRequest) -> LisaResult:
        """One request: its prompt, image encoding, generation (streamed through ``request.on_text``
        when asked) and the masks of this turn's [SEG]s."""
        with self.lock:
            prep = self.prepare(request)
            out = answer(self.model, self.tokenizer, prep.ids, prep.encoding, max_new_tokens=prep.budget,
                         use_prefix=self.cache.max_items > 0, skip_segs=prep.n_old_segs,
                         pick=request.sampling.picker(), on_token=prep.stream)
            return self.finish(prep, out.generated, out.mask_logits, out.mask_seconds)

    def prepare(self, request: GenerationRequest) -> "Prepared":
        """Prompt ids, the image encoding and the token budget (:class:`PromptError` for a prompt that
        does not fit the model's context)."""
        from ..tokenization import tokenizer_image_token

        t_start = time.perf_counter()
        if request.prompt_text is not None:  # formatted by the client: its [SEG]s all belong to earlier turns
            text_prompt = request.prompt_text
            if self.model.config.mm_use_im_start_end:
                text_prompt = expand_image_token(text_prompt)
            n_old = text_prompt.count(SEG_TOKEN)
        else:
            text_prompt = self.build_prompt(request.prompt, request.history)
            # [SEG]s of earlier turns were answered then: only this turn's (typed or generated) count
            n_old = sum(u.count(SEG_TOKEN) + (a or "").count(SEG_TOKEN) for u, a in request.history or [])
        enc, hit = self.encode_image(request.image, request.key)
        ids = tokenizer_image_token(text_prompt, self.tokenizer)
        n_ctx = len(ids) - ids.count(IMAGE_TOKEN_INDEX) + ids.count(IMAGE_TOKEN_INDEX) * enc.clip_feats.shape[0]
        max_pos = int(getattr(self.model.llm.config, "max_position_embeddings", 10**9))
        budget = min(request.max_new_tokens or self.max_new_tokens, max_pos - n_ctx)
        if budget <= 0:
            raise PromptError(f"the prompt uses {n_ctx} positions; the model allows {max_pos}")
        stream = TextStream(lambda new: answer_text(self.tokenizer, new), request) if request.streams else None
        return Prepared(ids, enc, hit, budget, n_old, n_ctx, stream, t_start)

    def finish(self, prep: "Prepared", gen, mask_logits: torch.Tensor | None = None,
               mask_seconds: float | None = None) -> LisaResult:
        """The answer text, masks of this turn's [SEG]s (decoded here unless given: batched decoding
        hands over only ``gen``) and the timings of one generation."""
        enc = prep.encoding
        if mask_seconds is None:
            mask_logits, mask_seconds = seg_masks(self.model, gen, enc, skip_segs=prep.n_old_segs)
        t_mask = time.perf_counter()
        masks: list[np.ndarray] = []
        if mask_logits is not None:
            masks = [m.cpu().numpy() for m in (mask_logits > 0)]
        text = answer_text(self.tokenizer, gen.new_ids)
        ended = bool(gen.new_ids) and gen.new_ids[-1] == self.tokenizer.eos_token_id
        if prep.stream is not None:
            ended = ended or prep.stream.stopped_text is not None
            text = prep.stream.finish(text)
        t_end = time.perf_counter()
        timings = {
            "vision_tower": 0.0 if prep.cache_hit else enc.timings["vision_tower"],
            "sam_encoder": 0.0 if prep.cache_hit else enc.timings["sam_encoder"],
            "prefill": gen.timings["prefill"],
            "decode": gen.timings["decode"],
            "tokens": len(gen.new_ids),
            "per_token": gen.token_times,
            "mask_decode": mask_seconds + t_end - t_mask,
            "total": t_end - prep.t_start,
        }
        reason = "stop" if ended or len(gen.new_ids) < prep.budget else "length"
        return LisaResult(text, masks, gen.new_ids, timings, prep.cache_hit, reason, prep.prompt_tokens)


@dataclass
class Prepared:
    ids: list[int]
    encoding: ImageEncoding
    cache_hit: bool
    budget: int  # new tokens allowed
    n_old_segs: int  # [SEG]s of earlier turns (their hidden states come first and get no mask)
    prompt_tokens: int  # context positions of the prompt, image features included
    stream: TextStream | None
    t_start: float
