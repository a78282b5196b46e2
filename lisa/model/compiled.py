"""``torch.compile`` for the image encoders (SAM's ViT and the CLIP tower) on CUDA.

Compiling fuses the encoders' elementwise work (layer norms, GELUs, the relative-position bias
terms) around the matrix products; on a CPU the compile time (tens of seconds) would outweigh what
one image gains, so only CUDA modules are compiled. ``nn.Module.compile`` compiles in place: the
parameters and state-dict keys stay the same.
"""

from __future__ import annotations

import logging

log = logging.getLogger("lisa.model")


def compile_encoders(model, mode: str | None = None) -> list[str]:
    """Compile ``model``'s CLIP tower and SAM image encoder when they live on a CUDA device;
    returns the names of what was compiled (empty elsewhere)."""
    targets = [("vision_tower", model.vision_tower.vision_tower)]
    if model.config.has_seg_head:
        targets.append(("sam.vision_encoder", model.sam.vision_encoder))
    done = []
    for name, module in targets:
        weight = next(module.parameters())
        if weight.device.type != "cuda":
            continue
        module.compile(mode=mode, dynamic=False)
        done.append(name)
    if done:
        log.info("compiled on first use: %s", ", ".join(done))
    return done


def uncompile_encoders(model) -> None:
    """Undo :func:`compile_encoders` (the modules run eagerly again), for when compiling fails."""
    for module in (model.vision_tower.vision_tower, getattr(getattr(model, "sam", None), "vision_encoder", None)):
        # nn.Module.compile keeps the compiled callable here; without it the module calls its forward
        if module is not None and getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
