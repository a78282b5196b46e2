"""The demo model: sizes chosen for the synthetic shapes task, its tokenizer, its initialisation.

Everything is a standard :class:`~lisa.model.lisa.LisaForSegmentation` (LLaMA + CLIP + SAM from
transformers), so the exported folder loads with ``lisa chat --version`` like any checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..conversation import LLAMA_2_SYSTEM, LLAVA_V1_SYSTEM
from ..model.config import LisaConfig
from ..model.lisa import LisaForSegmentation
from ..model.sam import sam_config
from .init_weights import bag_of_words_init, space_to_depth_init

# Sizes for the shapes task (see bench/demo_experiment.py for how they were chosen). SAM's vision
# config defaults to initializer_range=1e-10 (it is always loaded from pretrained weights), which
# leaves a randomly built encoder dead: the demo asks for the usual 0.02.
DEMO_SIZES = dict(
    llm=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4),
    clip=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
              image_size=56, patch_size=14),
    sam=dict(image_size=128, patch_size=8, window_size=8, hidden_size=96, num_hidden_layers=4,
             num_attention_heads=4, global_attn_indexes=[1, 3], prompt_dim=128, decoder_mlp_dim=256,
             decoder_heads=4, decoder_depth=3, initializer_range=0.02),
    vocab=1024,  # an upper bound: the tokenizer stops when every word of the data is one token (~700)
)
IDF_SHARPNESS = 8.0  # attention score of the most important token (see lisa.demo.init_weights)
PROMPT_GAIN = 4.0
QK_GAIN = 3.0
OPEN_CHANNELS = 8  # learned encoder channels passed straight to the mask embedding (lisa.demo.init_weights)


def demo_config(vocab_size: int, sizes: dict | None = None) -> LisaConfig:
    s = sizes or DEMO_SIZES
    llm = dict(model_type="llama", vocab_size=vocab_size, max_position_embeddings=1024, rms_norm_eps=1e-6,
               num_key_value_heads=s["llm"]["num_attention_heads"], tie_word_embeddings=False,
               bos_token_id=1, eos_token_id=2, pad_token_id=0, **s["llm"])
    clip = dict(model_type="clip_vision_model", hidden_act="quick_gelu", layer_norm_eps=1e-5,
                projection_dim=s["clip"]["hidden_size"], **s["clip"])
    sam = sam_config(**s["sam"]).to_dict()
    return LisaConfig(llm=llm, vision=clip, sam=sam, vision_tower="vision_tower",
                      mm_hidden_size=clip["hidden_size"], out_dim=s["sam"]["prompt_dim"],
                      projector_type="mlp2x_gelu")


def fix_sam_init(model: LisaForSegmentation, seed: int = 0) -> None:
    """transformers draws SAM's random Fourier matrix with std hidden_size/2 (the released weights
    overwrite it); the original SAM uses std 1. At std 48 the positional encoding of a 16x16 grid is
    aliased noise, so the decoder cannot reason about positions. Redraw it as the original does and
    keep it fixed (it is a buffer in the original)."""
    pe = model.sam.shared_image_embedding.positional_embedding
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pe.copy_(torch.randn(pe.shape, generator=g))
    pe.requires_grad_(False)


def build_demo_model(tokenizer, seed: int = 0, sizes: dict | None = None, llm_init: str = "bow",
                     bow_beta: float = 8.0, importance: torch.Tensor | None = None,
                     sharpness: float = IDF_SHARPNESS, prompt_gain: float = PROMPT_GAIN,
                     qk_gain: float = QK_GAIN, open_channels: int = OPEN_CHANNELS) -> LisaForSegmentation:
    """The untrained demo model: random weights, SAM started as in :mod:`lisa.demo.init_weights`, and the
    LLM as a bag of words (``llm_init="bow"``), weighted by token ``importance`` when given (see
    :func:`demo_importance`), or with transformers' random init (``"random"``). ``prompt_gain``
    scales the [SEG] head's output layer at init, ``qk_gain`` the mask decoder's query and key
    projections (sharper attention from the start)."""
    from ..tokenization import seg_token_id

    torch.manual_seed(seed)
    model = LisaForSegmentation(demo_config(len(tokenizer), sizes), seg_token_id=seg_token_id(tokenizer))
    fix_sam_init(model, seed)
    # The original SAM decoder uses PyTorch's default init; transformers' N(0, 0.02) makes its deep
    # MLPs start with near-zero outputs and learn slowly from scratch.
    for module in model.sam.mask_decoder.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()
    with torch.no_grad():
        for name, p in model.sam.mask_decoder.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(qk_gain)
    space_to_depth_init(model, seed, open_channels=open_channels)
    if llm_init == "bow":
        bag_of_words_init(model, seed, beta=bow_beta, importance=importance, sharpness=sharpness)
    elif llm_init != "random":
        raise ValueError(f"llm_init must be 'bow' or 'random', got {llm_init!r}")
    # A prompt about as large as SAM's (layer-normed) image tokens, instead of a few times smaller:
    # the mask decoder then follows it from the start rather than learning a prompt-blind mask first.
    with torch.no_grad():
        last = [m for m in model.text_hidden_fcs.modules() if isinstance(m, nn.Linear)][-1]
        last.weight.mul_(prompt_gain)
        last.bias.mul_(prompt_gain)
    return model


def demo_importance(tokenizer, dataset_dir) -> torch.Tensor:
    """Token importance for the bag-of-words start: IDF over the data's question and answer texts,
    0 for the words of the system prompt and the templates."""
    from .init_weights import token_importance

    return token_importance(tokenizer, data_texts(dataset_dir), template_texts())


def template_texts() -> list[str]:
    """The texts around every question: system prompts, roles, question and answer templates."""
    from ..data import templates as T

    return [LLAVA_V1_SYSTEM, LLAMA_2_SYSTEM, *T.SHORT_QUESTION_LIST, *T.LONG_QUESTION_LIST,
            *T.EXPLANATORY_QUESTION_LIST, *T.ANSWER_LIST, T.VAL_SHORT_QUESTION, T.VAL_LONG_QUESTION,
            "USER: ASSISTANT: [INST] [/INST] <<SYS>> <</SYS>>"]


def data_texts(dataset_dir) -> list[str]:
    """Every question and answer text of the synthetic data (ReasonSeg train and LLaVA VQA)."""
    root = Path(dataset_dir)
    texts = []
    for path in sorted((root / "reason_seg" / "ReasonSeg" / "train").glob("*.json")):
        texts.extend(json.loads(path.read_text(encoding="utf-8"))["text"])
    for path in sorted((root / "llava_dataset").glob("*.json")):
        for item in json.loads(path.read_text(encoding="utf-8")):
            texts.extend(turn["value"] for turn in item["conversations"])
    return texts


def tokenizer_corpus(dataset_dir) -> list[str]:
    """Texts the demo tokenizer is trained on: prompt templates and every text of the synthetic data."""
    # The prompt text is in every sequence: weight it so BPE learns whole words for it (short sequences).
    return template_texts() * 200 + data_texts(dataset_dir)


def build_demo_tokenizer(dataset_dir, out_dir, vocab_size: int | None = None):
    from ..tokenization import add_lisa_tokens, train_llama_style_tokenizer

    tok = train_llama_style_tokenizer(tokenizer_corpus(dataset_dir), vocab_size or DEMO_SIZES["vocab"], out_dir)
    add_lisa_tokens(tok, use_mm_start_end=True)
    return tok
