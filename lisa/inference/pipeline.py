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

from ..constants import IM_END_TOKEN, IM_START_TOKEN, IMAGE_TOKEN, IMAGE_TOKEN_INDEX, SEG_TOKEN
from ..conversation import get_template, model_name_from_path, template_for_model_name
from ..model.generation import build_prefix, generate, image_prefix_length, use_decoding_layout
from ..preprocess import as_rgb_array, sam_preprocess
from .cache import EncodingCache, ImageEncoding, image_key
from .request import MAX_PROMPT_CHARS, GenerationRequest, Sampling, TextStream

__all__ = ["MAX_PROMPT_CHARS", "LisaPipeline", "LisaResult", "answer_text", "pick_template"]

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
    def encode_image(self, image) -> tuple[ImageEncoding, bool]:
        arr = as_rgb_array(image)
        key = image_key(arr)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, True
        model, cfg, dev = self.model, self.model.config, self.device
        t0 = time.perf_counter()
        clip_px = cfg.vision_input(arr)[None].to(dev)
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

    def stop_strings(self) -> tuple[str, ...]:
        """The template's end-of-turn marker when it is not the tokenizer's end of sequence (which
        ends generation anyway): ``<|im_end|>``, ``###``, or a ``</s>`` a byte-level vocabulary spells out."""
        end = get_template(self.conv_type).answer_end
        return (end,) if end and end != self.tokenizer.eos_token else ()

    def __call__(self, image, prompt: str, history: list[tuple[str, str]] | None = None,
                 max_new_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                 on_text=None) -> LisaResult:
        """``on_text(piece)`` receives the answer while it is generated; ``temperature`` / ``top_p``
        replace the pipeline's sampling for this call."""
        sampling = self.sampling if temperature is None and top_p is None else Sampling(
            self.sampling.temperature if temperature is None else temperature,
            self.sampling.top_p if top_p is None else top_p)
        return self.run(GenerationRequest(image, prompt, history, max_new_tokens=max_new_tokens, sampling=sampling,
                                          stop=self.stop_strings(), on_text=on_text))

    def run(self, request: GenerationRequest) -> LisaResult:
        """One request: its prompt, image encoding, generation (streamed through ``request.on_text``
        when asked) and the masks of this turn's [SEG]s."""
        with self.lock:
            prep = self.prepare(request)
            t_prefix = time.perf_counter()
            ids, enc = prep.ids, prep.encoding
            n_prefix = image_prefix_length(ids)
            if self.cache.max_items > 0 and n_prefix and (enc.prefix is None or not enc.prefix.matches(ids)):
                enc.prefix = build_prefix(self.model, ids[:n_prefix], enc.clip_feats)
            t_prefix = time.perf_counter() - t_prefix
            gen = generate(self.model, torch.tensor([ids], dtype=torch.long), enc.clip_feats,
                           max_new_tokens=prep.budget, eos_token_id=self.tokenizer.eos_token_id, prefix=enc.prefix,
                           pick=request.sampling.picker(), on_token=prep.stream)
            return self.finish(prep, gen, t_prefix)

    def prepare(self, request: GenerationRequest) -> "Prepared":
        """Prompt ids, the image encoding and the token budget (``ValueError`` for a prompt that does
        not fit the model's context)."""
        from ..tokenization import tokenizer_image_token

        t_start = time.perf_counter()
        if request.prompt_text is not None:  # formatted by the client: its [SEG]s all belong to earlier turns
            text_prompt = request.prompt_text
            wrapped = IM_START_TOKEN + IMAGE_TOKEN + IM_END_TOKEN
            if self.model.config.mm_use_im_start_end and wrapped not in text_prompt:
                text_prompt = text_prompt.replace(IMAGE_TOKEN, wrapped)
            n_old = text_prompt.count(SEG_TOKEN)
        else:
            text_prompt = self.build_prompt(request.prompt, request.history)
            # [SEG]s of earlier turns were answered then: only this turn's (typed or generated) count
            n_old = sum(u.count(SEG_TOKEN) + (a or "").count(SEG_TOKEN) for u, a in request.history or [])
        enc, hit = self.encode_image(request.image)
        ids = tokenizer_image_token(text_prompt, self.tokenizer)
        n_ctx = len(ids) - ids.count(IMAGE_TOKEN_INDEX) + ids.count(IMAGE_TOKEN_INDEX) * enc.clip_feats.shape[0]
        max_pos = int(getattr(self.model.llm.config, "max_position_embeddings", 10**9))
        budget = min(request.max_new_tokens or self.max_new_tokens, max_pos - n_ctx)
        if budget <= 0:
            raise ValueError(f"the prompt uses {n_ctx} positions; the model allows {max_pos}")
        stream = TextStream(lambda new: answer_text(self.tokenizer, new), request) if request.streams else None
        return Prepared(ids, enc, hit, budget, n_old, n_ctx, stream, t_start)

    def finish(self, prep: "Prepared", gen, t_prefix: float = 0.0) -> LisaResult:
        """Masks of this turn's [SEG]s, the answer text and the timings of one generation."""
        enc = prep.encoding
        t_mask = time.perf_counter()
        masks: list[np.ndarray] = []
        seg_hidden = gen.seg_hidden[prep.n_old_segs:]
        if self.model.config.has_seg_head and seg_hidden.shape[0]:
            with torch.no_grad():
                emb = self.model.seg_embeddings(seg_hidden)
                logits = self.model.decode_masks(enc.sam_embedding, emb, enc.resize, enc.original_size)
            masks = [m.cpu().numpy() for m in (logits > 0)]
        t_end = time.perf_counter()
        text = answer_text(self.tokenizer, gen.new_ids)
        ended = bool(gen.new_ids) and gen.new_ids[-1] == self.tokenizer.eos_token_id
        if prep.stream is not None:
            ended = ended or prep.stream.stopped_text is not None
            text = prep.stream.finish(text)
        timings = {
            "vision_tower": 0.0 if prep.cache_hit else enc.timings["vision_tower"],
            "sam_encoder": 0.0 if prep.cache_hit else enc.timings["sam_encoder"],
            "prefill": t_prefix + gen.timings["prefill"],
            "decode": gen.timings["decode"],
            "tokens": len(gen.new_ids),
            "per_token": gen.token_times,
            "mask_decode": t_end - t_mask,
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


def answer_text(tokenizer, new_ids: list[int]) -> str:
    """The answer as shown to users: the generated ids without the end of sequence."""
    from ..tokenization import decode_answer

    ids = [i for i in new_ids if i != tokenizer.eos_token_id]
    return decode_answer(tokenizer, ids).replace("</s>", "").strip()
