"""Contiguous activations in SAM's mask-decoder upscaling (a CPU training speed-up).

In transformers' ``SamMaskDecoder`` the upscaling's two GELUs read channels-last tensors (the
permuted output of ``upscale_layer_norm`` and the output of the transposed convolution
``upscale_conv2``) while the gradients that come back to them are contiguous. PyTorch's CPU
``gelu_backward`` with mixed layouts is 6 to 8 times slower than with one layout, and these
tensors are the decoder's largest (one per prompt at 4x the token grid): on the demo model the
decoder's forward + backward for 40 prompts took 190-250 ms, 16% longer than with the two outputs
made contiguous. Making them contiguous changes no value (a copy), only the layout.
"""

from __future__ import annotations

import torch

_HOOKS = "_lisa_contiguous_upscaling"


def _contiguous(module, inputs, output: torch.Tensor) -> torch.Tensor:
    return output.contiguous()


def use_contiguous_upscaling(sam) -> None:
    """Make the outputs of ``sam.mask_decoder``'s ``upscale_layer_norm`` and ``upscale_conv2``
    contiguous (forward hooks, once per decoder; parameters and state-dict keys are unchanged)."""
    decoder = sam.mask_decoder
    if getattr(decoder, _HOOKS, None):
        return
    setattr(decoder, _HOOKS, [decoder.upscale_layer_norm.register_forward_hook(_contiguous),
                              decoder.upscale_conv2.register_forward_hook(_contiguous)])


def remove_contiguous_upscaling(sam) -> None:
    """Undo :func:`use_contiguous_upscaling` (for comparisons with transformers' layout)."""
    for handle in getattr(sam.mask_decoder, _HOOKS, None) or []:
        handle.remove()
    setattr(sam.mask_decoder, _HOOKS, None)
