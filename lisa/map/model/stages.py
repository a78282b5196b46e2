"""Training stages: what is trained.

Stage 2 (default): Q-Former, projection, map queries and decoder; CLIP and the LLM frozen.
Stage 3: the LLM too, either whole or through LoRA adapters (``lora_r > 0``); CLIP stays frozen.
"""

from __future__ import annotations

from torch import nn

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def wrap_lora(llm: nn.Module, lora: dict) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=int(lora["r"]), lora_alpha=int(lora.get("alpha", 2 * int(lora["r"]))),
                     lora_dropout=float(lora.get("dropout", 0.05)),
                     target_modules=list(lora.get("targets", LORA_TARGETS)), bias="none")
    return get_peft_model(llm, cfg)


def apply_stage(model, stage: int, lora_r: int = 0, lora_alpha: int | None = None,
                lora_dropout: float = 0.05) -> None:
    if stage not in (2, 3):
        raise ValueError(f"--stage must be 2 or 3, got {stage}")
    model.freeze(llm=True)
    if stage == 2:
        return
    if lora_r > 0:
        if not model.config.llm_lora:
            model.config.llm_lora = {"r": lora_r, "alpha": lora_alpha or 2 * lora_r, "dropout": lora_dropout,
                                     "targets": list(LORA_TARGETS)}
            model.llm = wrap_lora(model.llm, model.config.llm_lora)
        for name, p in model.llm.named_parameters():
            p.requires_grad_("lora_" in name)
    else:
        if model.config.llm_lora:
            raise ValueError("this detector's LLM has LoRA adapters; stage 3 with it needs --llm_lora_r > 0")
        model.llm.requires_grad_(True)


def parameter_groups(model, lr_qformer: float, lr_queries: float, lr_decoder: float, lr_llm: float,
                     weight_decay: float = 0.01) -> list[dict]:
    """AdamW groups with the three (four in stage 3) learning rates, named for the log line.

    ``q``: Q-Former and its projection into the LLM; ``m``: the map queries; ``d``: the decoder;
    ``llm``: the LLM (stage 3). Only trainable tensors enter the optimizer, so frozen parts get no
    optimizer state."""
    groups = {"q": [], "m": [], "d": [], "llm": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = name.split(".", 1)[0]
        key = {"qformer": "q", "visual_proj": "q", "map_queries": "m", "decoder": "d", "llm": "llm"}.get(part)
        if key is None:
            raise ValueError(f"trainable tensor {name} belongs to no learning-rate group")
        groups[key].append(p)
    lrs = {"q": lr_qformer, "m": lr_queries, "d": lr_decoder, "llm": lr_llm}
    return [{"name": k, "params": v, "lr": lrs[k], "weight_decay": 0.0 if k == "m" else weight_decay}
            for k, v in groups.items() if v]
