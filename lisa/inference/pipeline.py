"""``LisaPipeline``: image + instruction -> answer text and boolean masks at the original image size.

Like segment-anything's ``SamPredictor``, an image is encoded once (CLIP features and the SAM image
embedding) and reused for every later query or turn on the same image.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..constants import IMAGE_TOKEN
from ..conversation import (
    expand_image_token,
    get_template,
    image_placeholder,
    model_name_from_path,
    template_for_model_name,
)
from ..images import EncodedImage, to_rgb_array
from ..model.allocator import reuse_freed_memory
from ..model.compiled import compile_encoders, uncompile_encoders
from ..model.generation import use_decoding_layout
from ..model.static_decode import make_fast_decoding
from ..precision import default_precision
from ..preprocess import as_rgb_array, sam_preprocess
from ..tokenization import escape_special_text, min_token_count
from .answer import answer, answer_text, encode, seg_masks
from .cache import EncodingCache, ImageEncoding, image_key
from .limits import MAX_MASKS, PromptError, check_text, context_positions, generation_budget
from .request import MAX_PROMPT_CHARS, GenerationRequest, Sampling, TextStream

__all__ = ["MAX_PROMPT_CHARS", "LisaPipeline", "LisaResult", "PromptError", "PromptPlan", "answer_text",
           "pick_template"]
log = logging.getLogger("lisa.inference")

LLAVA_TEMPERATURE = 0.2  # LLaVA's chat samples at 0.2 by default


@dataclass
class LisaResult:
    text: str
    masks: list[np.ndarray]  # bool [H, W] per [SEG] of this turn, in order
    output_ids: list[int] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    cache_hit: bool = False
    finish_reason: str = "stop"  # "length" when the token budget ran out
    prompt_tokens: int = 0
    masks_dropped: int = 0  # [SEG]s beyond max_masks, answered without a mask

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
                 top_p: float | None = None, max_masks: int = MAX_MASKS, compile: bool = True,
                 decode: str | None = None):
        self.model = model.eval()
        use_decoding_layout(self.model)
        reuse_freed_memory()
        # on CUDA (unless compile=False): static-cache decode under a CUDA graph, compiled SAM/CLIP
        self.fast = make_fast_decoding(self.model, compile, decode)
        self.compiled_encoders = compile_encoders(self.model) if compile else []
        self.tokenizer = tokenizer
        self.conv_type = pick_template(model, None, conv_type)
        get_template(self.conv_type)  # validate
        if max_masks < 0:
            raise ValueError(f"max_masks must be >= 0, not {max_masks}")
        self.max_masks = max_masks
        self.sampling = Sampling(temperature or 0.0, top_p)
        self.max_new_tokens = max_new_tokens
        self.cache = EncodingCache(cache_size)
        self.model_max_length = model_max_length or getattr(tokenizer, "model_max_length", 512)
        self.lock = threading.RLock()
        self.model_dir = None  # the folder it was loaded from (a Hub id's snapshot), when known
        graph = self.fast is not None and self.fast.graph
        self.warmup_s = self.warm_up() if graph or self.compiled_encoders else 0.0

    @classmethod
    def from_pretrained(cls, path, *, precision: str | None = None, device: str | None = "auto",
                        vision_tower: str | None = None, sam_config: str | None = None,
                        load_in_4bit: bool = False, load_in_8bit: bool = False, conv_type: str | None = None,
                        max_new_tokens: int = 512, model_max_length: int = 512, cache_size: int = 8,
                        progress: bool = True, revision: str | None = None, temperature: float | None = None,
                        top_p: float | None = None, max_masks: int = MAX_MASKS,
                        compile: bool = True) -> "LisaPipeline":
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
                             top_p=top_p, max_masks=max_masks, compile=compile)
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

    def warm_up(self) -> float:
        """Compile and record the CUDA paths now rather than in the first query; returns the seconds.
        Where compiling fails (no Triton for this GPU, an unsupported layer), the pipeline says why
        and runs eagerly: the same answers, without the compiled speed."""
        t0 = time.perf_counter()
        try:
            if self.compiled_encoders:
                cfg, dev = self.model.config, self.device
                with torch.no_grad():
                    self.model.encode_clip(torch.zeros((1, 3, cfg.clip_image_size, cfg.clip_image_size), device=dev))
                    if cfg.has_seg_head:
                        self.model.encode_sam(torch.zeros((1, 3, cfg.sam_image_size, cfg.sam_image_size),
                                                          device=dev))
            if self.fast is not None:
                self.fast.warm_up(self.warm_positions)
                if self.fast.broken:  # it said why; nothing of it is used
                    self.fast = None
        except Exception as e:  # noqa: BLE001 - whatever the compiler raises, eager decoding still works
            log.warning("compiling failed at warm-up (%s: %s); running eagerly instead (--no_compile skips "
                        "compiling)", type(e).__name__, " ".join(str(e).split())[:300])
            self.fast = None
            uncompile_encoders(self.model)
            self.compiled_encoders = []
        seconds = time.perf_counter() - t0
        log.info("warm-up (compiled encoders, decode graph) took %.1f s", seconds)
        return seconds

    @property
    def warm_positions(self) -> int:
        """The positions the load-time warm-up makes a cache for: the image, a typical prompt's text
        (64 tokens; a longer one moves to the next bucket) and a full answer."""
        return self.model.config.num_image_tokens + 64 + self.max_new_tokens

    def warm_up_batches(self, max_batch: int) -> float:
        """Make (on CUDA: compile and record) the static-cache rows that batches of up to ``max_batch``
        requests use, for the warmed-up bucket, now rather than in the first batch; returns the
        seconds. Nothing to do without the static path."""
        if self.fast is None or max_batch < 2:
            return 0.0
        from ..model.static_batch import row_counts, rows_decoder

        t0 = time.perf_counter()
        counts = row_counts(max_batch)
        for rows in counts:
            rows_decoder(self.fast, rows, self.warm_positions)
        seconds = time.perf_counter() - t0
        log.info("batch warm-up (rows %s) took %.1f s", counts, seconds)
        return seconds

    @property
    def device(self) -> torch.device:
        return self.model.llm.get_input_embeddings().weight.device

    # ---- image encoding ---------------------------------------------------------------------
    def encode_image(self, image, key: str | None = None) -> tuple[ImageEncoding, bool]:
        """The image's encoding (from the cache when it holds it) and whether it was cached. ``image``:
        an array, a PIL image, or an :class:`~lisa.images.EncodedImage` (decoded here only when the
        cache lacks it, after its request's prompt was checked, and not kept). ``key``: its
        :func:`~lisa.inference.cache.image_key` (an EncodedImage's own key), when the caller has it."""
        if isinstance(image, EncodedImage):
            key = key or image.key
        arr = None
        if key is None:
            arr = self._pixels(image)
            key = image_key(arr)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        if arr is None:
            arr = self._pixels(image)
        cfg = self.model.config
        t0 = time.perf_counter()
        clip_px = cfg.vision_input(arr)[None]
        t1 = time.perf_counter()
        sam_in = sam_preprocess(arr, cfg.sam_image_size, device=self.device) if cfg.has_seg_head else None
        t2 = time.perf_counter()
        enc = encode(self.model, clip_px, sam_in.pixels[None] if sam_in else None,
                     sam_in.resize if sam_in else (0, 0), arr.shape[:2], key)
        enc.timings["vision_tower"] += t1 - t0  # each encoder's time includes its preprocessing
        enc.timings["sam_encoder"] += t2 - t1
        self.cache.put(enc)
        return enc, False

    @staticmethod
    def _pixels(image) -> np.ndarray:
        if isinstance(image, EncodedImage):
            return image.decode()
        return to_rgb_array(image) if isinstance(image, Image.Image) else as_rgb_array(image)

    # ---- prompting --------------------------------------------------------------------------
    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.llm.config, "max_position_embeddings", 10**9))

    def build_prompt(self, prompt: str, history: list[tuple[str, str]] | None = None) -> str:
        """The prompt text: the template, the image placeholder in the first turn, then every turn.

        User and history text is escaped (:func:`~lisa.tokenization.escape_special_text`): a typed
        ``[SEG]``, ``</s>`` or ``<im_start>`` stays text, and a typed ``<image>`` is dropped (only
        this builder places the image)."""
        check_text(prompt, "the prompt", MAX_PROMPT_CHARS)
        turns = list(history or []) + [(prompt, None)]
        for i, (user, reply) in enumerate(turns[:-1]):
            check_text(user, f"history turn {i + 1} (user)", allow_empty=True)
            check_text(reply, f"history turn {i + 1} (assistant)", allow_empty=True)
        conv = get_template(self.conv_type)
        escape = lambda text: escape_special_text(self.tokenizer, text.replace(IMAGE_TOKEN, ""))  # noqa: E731
        for i, (user, reply) in enumerate(turns):
            if i == 0:
                user = image_placeholder(self.model.config.mm_use_im_start_end) + "\n" + escape(user).strip()
            else:
                user = escape(user)
            conv.append_user(user)
            conv.append_assistant(None if reply is None else escape(reply))
        return conv.get_prompt()

    def plan(self, request: GenerationRequest) -> "PromptPlan":
        """The prompt's ids and token budget, counted against the model's context from the tokens
        alone (each image placeholder as the vision tower's feature count), before any image is
        touched; :class:`~lisa.inference.limits.PromptError` for a request that cannot run."""
        from ..tokenization import tokenizer_image_token

        if request.prompt_text is not None:  # formatted by the client (LLaVA's worker protocol), as it is
            text = check_text(request.prompt_text, "the prompt")
            if self.model.config.mm_use_im_start_end:
                text = expand_image_token(text)
        else:
            text = self.build_prompt(request.prompt, request.history)
        n_feats = self.model.config.num_image_tokens
        # a cheap lower bound first, so a huge conversation is refused without tokenizing it
        n_images = text.count(IMAGE_TOKEN)
        lower = min_token_count(self.tokenizer, len(text) - n_images * len(IMAGE_TOKEN)) + n_images * n_feats
        generation_budget(lower, 1, self.max_positions)
        ids = tokenizer_image_token(text, self.tokenizer)
        positions = context_positions(ids, n_feats)
        budget = generation_budget(positions, request.max_new_tokens or self.max_new_tokens, self.max_positions)
        seg = self.model.seg_token_id
        # [SEG] ids in the prompt (only a client-formatted one has them) belong to earlier turns
        return PromptPlan(text, ids, positions, budget, ids.count(seg) if seg is not None else 0)

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
                         use_prefix=self.cache.max_items > 0, skip_segs=prep.n_old_segs, max_masks=self.max_masks,
                         binary=True, pick=request.sampling.picker(), on_token=prep.stream, fast=self.fast)
            return self.finish(prep, out.generated, out.mask_logits, out.mask_seconds)

    def prepare(self, request: GenerationRequest) -> "Prepared":
        """Prompt ids (:meth:`plan`, checked first), the image encoding and the token budget."""
        t_start = time.perf_counter()
        plan = self.plan(request)
        enc, hit = self.encode_image(request.image, request.key)
        if enc.clip_feats.shape[0] != self.model.config.num_image_tokens:  # the count in plan() was wrong
            raise RuntimeError(f"the vision tower gave {enc.clip_feats.shape[0]} features per image, the "
                               f"config says {self.model.config.num_image_tokens}")
        stream = TextStream(lambda new: answer_text(self.tokenizer, new), request) if request.streams else None
        return Prepared(plan.ids, enc, hit, plan.budget, plan.n_old_segs, plan.positions, stream, t_start)

    def finish(self, prep: "Prepared", gen, mask_logits: torch.Tensor | None = None,
               mask_seconds: float | None = None) -> LisaResult:
        """The answer text, masks of this turn's [SEG]s (decoded here unless given: batched decoding
        hands over only ``gen``) and the timings of one generation."""
        enc = prep.encoding
        if mask_seconds is None:
            mask_logits, mask_seconds = seg_masks(self.model, gen, enc, skip_segs=prep.n_old_segs,
                                                  max_masks=self.max_masks, binary=True)
        # only generated [SEG]s ask for masks (user and history text never holds a [SEG] id)
        dropped = max(0, gen.seg_hidden.shape[0] - prep.n_old_segs - self.max_masks)
        t_mask = time.perf_counter()
        masks: list[np.ndarray] = []
        if mask_logits is not None:
            binary = mask_logits if mask_logits.dtype == torch.bool else mask_logits > 0
            masks = [m.cpu().numpy() for m in binary]
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
        return LisaResult(text, masks, gen.new_ids, timings, prep.cache_hit, reason, prep.prompt_tokens, dropped)


@dataclass
class PromptPlan:
    text: str
    ids: list[int]  # with one IMAGE_TOKEN_INDEX per image placeholder
    positions: int  # what the language model will see, image features included
    budget: int  # tokens that may be generated
    n_old_segs: int  # [SEG] ids in the prompt (their hidden states come first and get no mask)


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
