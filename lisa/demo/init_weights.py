"""A pretraining-free start for the demo's SAM: pixels in, pixels out.

A randomly initialised SAM has to learn, from nothing, image features fine enough to draw a mask
boundary, and that alone takes far longer than the demo's few CPU minutes. So the demo starts SAM
as a *space-to-depth* autoencoder of colour, built only from SAM's own layers:

- the patch embedding averages each of the 4x4 sub-cells of a patch (one sub-cell = one pixel of
  SAM's low-resolution mask), giving 48 colour channels per token, plus two constant channels (+k,
  -k) that keep the channel-wise LayerNorms well conditioned on flat regions;
- the ViT blocks keep their small random init (close to identity at first) and learn shape
  features on top; the neck passes the channels through (identity 1x1 and centre-tap 3x3);
- the mask decoder's two transposed convolutions undo the space-to-depth: low-resolution pixel
  (y, x) receives the colour of its own sub-cell, shifted positive so the GELUs stay linear.

From the first step a prompt only has to pick a colour (a dot product with the upscaled
embedding) to produce a pixel-accurate mask; the transformers learn shapes, sizes and positions.
``open_channels`` of the encoder's free channels are also passed straight through the upscaling to
the per-pixel embedding (the demo uses 8): what the encoder learns there reaches the mask at full
strength from the start, instead of through two near-zero random layers.
Every other parameter keeps its ordinary random initialisation. The architecture is unchanged, so
the exported model is an ordinary LISA checkpoint.
"""

from __future__ import annotations

import torch

N_COLOUR = 48  # 16 sub-cells x RGB
N_POS = 4  # position channels: x, y, cos(pi x), cos(pi y) of the token centre, x and y in [-1, 1]
POS_SCALE = 2.0
CONST = 8.0  # magnitude of the two constant channels
GELU_SHIFT = 3.0  # keeps the colour channels in GELU's near-linear range
SMALL = 0.02
# Channels the init gives a fixed meaning (colour, constants, position), counted from 0; the rest
# are free. Open channel k runs encoder FIXED + k -> middle MID_FIXED + k -> pixel PIXEL_FIXED + k.
FIXED = N_COLOUR + 2 + N_POS  # image embedding (encoder output)
MID_FIXED = 12 + 2 + N_POS  # the upscaling's middle layer: 4 sub-pixels x RGB, constants, position
PIXEL_FIXED = 3 + 1 + N_POS  # per-pixel mask features: RGB, a constant, position


def _check(model) -> tuple[int, int, int, int, int]:
    venc = model.sam.vision_encoder
    hidden, _, patch, _ = venc.patch_embed.projection.weight.shape
    prompt = model.sam.mask_decoder.upscale_conv1.weight.shape[0]
    if patch % 4:
        raise ValueError(f"space-to-depth init needs a SAM patch size divisible by 4, got {patch}")
    if hidden < FIXED or prompt < FIXED or prompt // 4 < MID_FIXED or prompt // 8 < PIXEL_FIXED:
        raise ValueError(f"space-to-depth init needs SAM hidden and prompt sizes >= {FIXED} and a "
                         f"prompt size >= {8 * PIXEL_FIXED} (got hidden {hidden}, prompt {prompt})")
    return hidden, patch, prompt, patch // 4, FIXED


def _small(shape, g) -> torch.Tensor:
    return torch.randn(shape, generator=g) * SMALL


def pixel_features(decoder, image_embedding: torch.Tensor) -> torch.Tensor:
    """The mask decoder's per-pixel features of an image embedding (its two upscaling layers, as in
    transformers' ``SamMaskDecoder.forward``): what a mask is a dot product with."""
    x = decoder.activation(decoder.upscale_layer_norm(decoder.upscale_conv1(image_embedding)))
    return decoder.activation(decoder.upscale_conv2(x))


@torch.no_grad()
def space_to_depth_init(model, seed: int = 0, open_channels: int = 0) -> None:
    """Initialise ``model.sam`` (in place) as described in the module docstring. With
    ``open_channels`` > 0, that many of the encoder's free (learned) channels are also copied
    through the decoder's upscaling to the per-pixel embedding the mask is read from, so shape
    features the encoder learns reach the mask from the first step."""
    hidden, patch, prompt, sub, fixed = _check(model)
    g = torch.Generator().manual_seed(seed)
    sam = model.sam
    # patch embedding: [hidden, 3, patch, patch]
    w = _small(sam.vision_encoder.patch_embed.projection.weight.shape, g)
    w[:N_COLOUR + 2] = 0
    for a in range(4):
        for b in range(4):
            for c in range(3):
                w[3 * (4 * a + b) + c, c, a * sub:(a + 1) * sub, b * sub:(b + 1) * sub] = 1.0 / (sub * sub)
    bias = torch.zeros(hidden)
    bias[N_COLOUR], bias[N_COLOUR + 1] = CONST, -CONST
    w[N_COLOUR + 2:N_COLOUR + 2 + N_POS] = 0
    sam.vision_encoder.patch_embed.projection.weight.copy_(w)
    sam.vision_encoder.patch_embed.projection.bias.copy_(bias)
    pos_embed = sam.vision_encoder.pos_embed  # [1, G, G, hidden], zeros in transformers' init
    if pos_embed is not None:
        grid = pos_embed.shape[1]
        c = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2 - 1
        y, x = torch.meshgrid(c, c, indexing="ij")
        code = torch.stack([x, y, torch.cos(torch.pi * x), torch.cos(torch.pi * y)], -1) * POS_SCALE
        pos_embed.zero_()
        pos_embed[0, :, :, N_COLOUR + 2:N_COLOUR + 2 + N_POS] = code

    # neck: conv1 [prompt, hidden, 1, 1] and conv2 [prompt, prompt, 3, 3], both pass-through
    neck = sam.vision_encoder.neck
    w1 = _small(neck.conv1.weight.shape, g)
    w1[:fixed] = 0
    n = min(hidden, prompt)
    w1[torch.arange(n), torch.arange(n), 0, 0] += 1.0
    neck.conv1.weight.copy_(w1)
    w2 = _small(neck.conv2.weight.shape, g)
    w2[:fixed] = 0
    w2[torch.arange(prompt), torch.arange(prompt), 1, 1] += 1.0
    neck.conv2.weight.copy_(w2)

    # decoder upscaling: conv1 [prompt, prompt/4, 2, 2], conv2 [prompt/4, prompt/8, 2, 2]
    dec = sam.mask_decoder
    quarter, eighth = prompt // 4, prompt // 8
    u1 = _small(dec.upscale_conv1.weight.shape, g)
    u1[:, :MID_FIXED] = 0
    for p in range(2):
        for q in range(2):
            for i in range(2):
                for j in range(2):
                    s = 4 * (2 * p + i) + (2 * q + j)
                    for c in range(3):
                        u1[3 * s + c, 3 * (2 * i + j) + c, p, q] = 1.0
    for k in range(N_POS):  # position channels: the same value on the 4 sub-positions
        u1[N_COLOUR + 2 + k, 14 + k] = 1.0
    b1 = torch.zeros(quarter)
    b1[12], b1[13] = CONST, -CONST
    ln_bias = torch.zeros(quarter)
    ln_bias[:12] = GELU_SHIFT
    ln_bias[14:14 + N_POS] = GELU_SHIFT
    u2 = _small(dec.upscale_conv2.weight.shape, g)
    u2[:, :PIXEL_FIXED] = 0
    for i in range(2):
        for j in range(2):
            for c in range(3):
                u2[3 * (2 * i + j) + c, c, i, j] = 1.0
    for k in range(N_POS):
        u2[14 + k, 4 + k] = 1.0
    b2 = torch.zeros(eighth)
    b2[3] = 1.0
    for k in range(min(open_channels, prompt - fixed, quarter - MID_FIXED, eighth - PIXEL_FIXED)):
        u1[fixed + k, MID_FIXED + k] = 1.0
        u2[MID_FIXED + k, PIXEL_FIXED + k] = 1.0
        ln_bias[MID_FIXED + k] = GELU_SHIFT
    dec.upscale_conv1.weight.copy_(u1)
    dec.upscale_conv1.bias.copy_(b1)
    dec.upscale_layer_norm.bias.copy_(ln_bias)
    dec.upscale_conv2.weight.copy_(u2)
    dec.upscale_conv2.bias.copy_(b2)


def token_importance(tokenizer, texts, common) -> torch.Tensor:
    """Per-token weight in [0, 1]: the inverse document frequency of each token over ``texts``
    (scaled by its largest value), 0 for tokens of ``common`` texts (system prompt, templates) and
    for tokens that never occur."""
    import math

    counts = torch.zeros(len(tokenizer))
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        counts[sorted(set(ids))] += 1
    idf = torch.where(counts > 0, torch.log(len(texts) / counts.clamp(min=1)), torch.zeros(()))
    for ids in tokenizer(list(common), add_special_tokens=False)["input_ids"]:
        idf[ids] = 0.0
    return idf / max(float(idf.max()), math.ulp(1.0))


@torch.no_grad()
def bag_of_words_init(model, seed: int = 0, beta: float = 8.0, importance: torch.Tensor | None = None,
                      sharpness: float = 8.0) -> None:
    """Start the LLM as a bag of words of its context.

    A randomly initialised LLM's last hidden state hardly depends on the question (the [SEG]
    position sees ~60 tokens through near-uniform, tiny attention), and the text loss, which only
    asks it to emit the answer template, collapses what is left; the mask loss is hundreds of times
    weaker and cannot bring the question back in a few minutes. So: layer 0 attends uniformly
    (zero queries) and copies its normalised inputs (identity values, ``beta`` x identity output);
    every other residual branch starts at zero. The hidden state at position t is then
    ``embedding(t) + beta * mean(normalised embeddings up to t)``, which the [SEG] head can read
    the query from; image tokens start silent (zero projector output).

    With ``importance`` (one weight in [0, 1] per token, see :func:`token_importance`) layer 0
    attends by it instead of uniformly (:func:`_importance_attention`): in a plain mean the one
    word that matters ("red") is a sixtieth of the state, next to the system prompt and templates.
    """
    llm = model.llm
    cfg = llm.config
    hidden = int(cfg.hidden_size)
    heads, kv_heads = int(cfg.num_attention_heads), int(getattr(cfg, "num_key_value_heads", cfg.num_attention_heads))
    if heads != kv_heads:
        raise ValueError("bag-of-words init needs num_key_value_heads == num_attention_heads")
    g = torch.Generator().manual_seed(seed)
    emb = llm.get_input_embeddings().weight
    emb.copy_(torch.randn(emb.shape, generator=g))
    eye = torch.eye(hidden)
    for i, layer in enumerate(llm.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        attn.q_proj.weight.zero_()
        attn.v_proj.weight.copy_(eye)
        attn.o_proj.weight.copy_(eye * beta if i == 0 else torch.zeros_like(eye))
        mlp.down_proj.weight.zero_()
        for lin in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.down_proj):
            if lin.bias is not None:
                lin.bias.zero_()
    if importance is not None:
        _importance_attention(llm, importance, sharpness)
    last = model.mm_projector[-1] if isinstance(model.mm_projector, torch.nn.Sequential) else model.mm_projector
    last.weight.zero_()
    last.bias.zero_()


def _importance_attention(llm, importance: torch.Tensor, sharpness: float) -> None:
    """Layer 0 attends by token importance instead of uniformly: embedding channel 0 is a constant
    and channel 1 holds the token's importance; every head's query reads the constant and its key
    the importance, both in the slowest rotary pair (which hardly turns over a few hundred
    positions), so the score of key token t is about ``sharpness * importance[t]`` wherever it is."""
    cfg = llm.config
    hidden, heads = int(cfg.hidden_size), int(cfg.num_attention_heads)
    head_dim = hidden // heads
    if importance.shape != (llm.get_input_embeddings().weight.shape[0],):
        raise ValueError(f"importance must have one value per token, got shape {tuple(importance.shape)}")
    emb = llm.get_input_embeddings().weight
    emb[:, 0] = 1.0
    emb[:, 1] = importance.to(emb.dtype)
    attn = llm.model.layers[0].self_attn
    attn.q_proj.weight.zero_()
    attn.k_proj.weight.zero_()
    slow = head_dim // 2 - 1
    for h in range(heads):
        attn.q_proj.weight[h * head_dim + slow, 0] = sharpness * head_dim ** 0.5
        attn.k_proj.weight[h * head_dim + slow, 1] = 1.0


@torch.no_grad()
def seg_hidden_states(model, batches) -> torch.Tensor:
    """The LLM's hidden states at the [SEG]-predicting positions of collated training batches."""
    from ..model.splice import seg_hidden_positions

    out = []
    for batch in batches:
        clip = model.encode_clip(batch["images_clip"])
        offset = torch.as_tensor(batch["offset"])
        rows = torch.repeat_interleave(torch.arange(len(offset) - 1), offset.diff())
        spliced, hidden, _ = model.run_llm(batch["input_ids"], clip, rows, batch["attention_mask"],
                                           need_logits=False)
        for n, pos in enumerate(seg_hidden_positions(batch["input_ids"], spliced.span_end, model.seg_token_id)):
            out.append(hidden[n, pos])
    return torch.cat(out).float()


@torch.no_grad()
def whiten_seg_head(model, hidden: torch.Tensor, seed: int = 0, floor: float = 1e-3) -> None:
    """Data-dependent init of the [SEG] head's first layer: centre and whiten the hidden states it
    reads (a random rotation of their ZCA whitening). Differences between questions are a few per
    cent of those states; without this the head needs many steps to grow weights large enough to
    turn them into different prompts. ``floor`` (relative to the largest variance) keeps directions
    that hardly vary from being blown up."""
    first = model.text_hidden_fcs[0][0]
    mu = hidden.mean(0)
    cov = torch.cov((hidden - mu).T)
    evals, evecs = torch.linalg.eigh(cov)
    evals = evals.clamp(min=float(evals.max()) * floor)
    zca = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(first.out_features, first.in_features, generator=g))
    weight = q @ zca
    first.weight.copy_(weight.to(first.weight.dtype))
    first.bias.copy_((-weight @ mu).to(first.bias.dtype))
