"""A base LLaVA folder turned into a LISA model for training (what the original's ``train_ds.py``
does before training): ``[SEG]`` (and ``<im_start>``/``<im_end>``) added to the tokenizer and the
embeddings, SAM from an official checkpoint (or random), and a new ``[SEG]`` head. A LISA folder
passes through with its own SAM and head."""

from __future__ import annotations

from ..checkpoint.errors import CheckpointError
from ..checkpoint.loader import complete_seg_head, instantiate, read_checkpoint, use_checkpoint_sam
from ..checkpoint.sam_keys import load_sam_checkpoint, sam_config_for
from ..model.sam import sam_config


def load_as_lisa(path, *, vision_tower: str | None = None, sam_config_file: str | None = None,
                 sam_checkpoint: str | None = None, precision=None, model_max_length: int = 512,
                 use_mm_start_end: bool = True, progress: bool = True):
    """``(model, tokenizer)`` of ``path`` as a LISA model, in eval mode."""
    from ..tokenization import add_lisa_tokens

    parts = read_checkpoint(path, vision_tower=vision_tower, model_max_length=model_max_length, progress=progress)
    cfg = parts.cfg
    if not use_checkpoint_sam(parts, sam_config_file):
        if sam_checkpoint:
            scfg, sam_state = load_sam_checkpoint(sam_checkpoint, sam_config_file)
            cfg.sam = scfg.to_dict()
            parts.internal.update({"sam." + k: v for k, v in sam_state.items()})
        elif cfg.has_seg_head:
            raise CheckpointError(f"{parts.folder}: a LISA checkpoint without SAM weights (model.visual_model.*)")
        else:
            cfg.sam = (sam_config_for({}, sam_config_file) if sam_config_file else sam_config("vit_h")).to_dict()
            parts.new_parts.append("sam")
    complete_seg_head(parts)
    tokenizer = parts.tokenizer
    add_lisa_tokens(tokenizer, use_mm_start_end)
    cfg.mm_use_im_start_end = use_mm_start_end
    model = instantiate(parts, precision, progress)
    if len(tokenizer) != model.llm.get_input_embeddings().weight.shape[0]:
        model.llm.resize_token_embeddings(len(tokenizer))
        cfg.llm["vocab_size"] = len(tokenizer)
    return model.eval(), tokenizer
