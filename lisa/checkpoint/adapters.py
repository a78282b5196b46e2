"""LLaVA's LoRA output folders, applied to a loaded base model in memory (``--model-base``).

LLaVA's ``finetune_task_lora.sh`` writes a peft adapter of its language model
(``adapter_config.json`` + ``adapter_model.safetensors``/``.bin``, keys
``base_model.model.model.layers.N...lora_A.weight``) and the other trained weights, the projector
above all, as ``non_lora_trainables.bin`` (keys ``base_model.model.model.mm_projector.*``). Our
``llm`` has the module names of LLaVA's language model, so peft loads the adapter onto it directly
and merges it; the other tensors are renamed like any LLaVA checkpoint's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .errors import CheckpointError, first
from .files import load_torch_file
from .layout import lisa_to_internal

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
NON_LORA = "non_lora_trainables.bin"
PEFT_PREFIX = "base_model.model."


def is_adapter_folder(path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def apply_adapter_folder(model, folder) -> list[str]:
    """Merge the LoRA of ``folder`` into ``model.llm`` and load its non-LoRA tensors; returns the
    names of the tensors it replaced (besides the merged LoRA layers)."""
    from peft import PeftModel

    folder = Path(folder)
    if not is_adapter_folder(folder):
        raise CheckpointError(f"{folder}: no {ADAPTER_CONFIG}; not a LoRA adapter folder")
    try:
        peft_model = PeftModel.from_pretrained(model.llm, str(folder), is_trainable=False)
    except (ValueError, OSError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{folder}: cannot apply this LoRA adapter to the base model ({e})") from e
    model.llm = peft_model.merge_and_unload()
    replaced: list[str] = []
    extra = folder / NON_LORA
    if extra.is_file():
        state = load_torch_file(extra)
        state = {k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k: v for k, v in state.items()}
        internal, _ = lisa_to_internal(state)
        expected = model.state_dict()
        unexpected = sorted(k for k in internal if k not in expected)
        if unexpected:
            raise CheckpointError(f"{extra}: tensors the base model does not have: {first(unexpected)}")
        bad = [k for k, v in internal.items() if tuple(v.shape) != tuple(expected[k].shape)]
        if bad:
            raise CheckpointError(f"{extra}: shape mismatch for {first(bad)} (another base model?)")
        with torch.no_grad():
            for k, v in internal.items():
                expected[k].copy_(v.to(expected[k].dtype))
        replaced = sorted(internal)
    log.info("applied the LoRA adapter of %s (%d other tensors)", folder, len(replaced))
    return replaced
