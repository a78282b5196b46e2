"""The map detector: forward shapes, frozen parts, targets, decoding, checkpoints, pretrained sources."""

import numpy as np
import pytest
import torch

from helpers.threads import one_torch_thread
from lisa.map.checkpoint import build_map_detector
from lisa.map.checkpoint.io import DetectorCheckpointError, load_detector, save_detector
from lisa.map.data.batch import random_instances
from lisa.map.model import decode, make_targets
from lisa.map.model.stages import apply_stage, parameter_groups
from lisa.map.spec import MAX_ORDERS, NUM_POINTS, NUM_QUERIES, equivalent_orders, normalize


@pytest.fixture(autouse=True)
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def tiny():
    return build_map_detector(preset="tiny", seed=0).eval()


def _images(b=2, seed=0):
    return torch.randn(b, 6, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_forward_shapes_and_dtypes(tiny):
    with torch.no_grad():
        out = tiny(_images(), tiny.instruction_ids)
        out_batched = tiny(_images(), tiny.instruction_ids[None].repeat(2, 1))
    assert out["pred_logits"].shape == (2, NUM_QUERIES, 4) and out["pred_logits"].dtype == torch.float32
    assert out["pred_points"].shape == (2, NUM_QUERIES, NUM_POINTS, 2) and out["pred_points"].dtype == torch.float32
    assert float(out["pred_points"].min()) >= 0 and float(out["pred_points"].max()) <= 1
    assert torch.equal(out["pred_points"], out_batched["pred_points"])
    assert len(out["aux_outputs"]) == tiny.config.decoder_layers - 1
    # the images reach the output: other images, other points
    with torch.no_grad():
        other = tiny(_images(seed=1))
    assert not torch.allclose(other["pred_points"], out["pred_points"])


def test_forward_with_loss_and_bad_inputs(tiny):
    rng = np.random.default_rng(0)
    targets = [make_targets(*random_instances(rng, 3)), make_targets(*random_instances(rng, 0))]
    out = tiny(_images(), return_loss=True, targets=targets)
    assert {"loss_total", "loss_cls", "loss_pts", "loss_dir"} <= set(out)
    assert torch.isfinite(out["loss_total"])
    with pytest.raises(ValueError, match="targets"):
        tiny(_images(), return_loss=True)
    with pytest.raises(ValueError, match=r"\[B, 6, 3, H, W\]"):
        tiny(torch.randn(2, 5, 3, 64, 64))


def test_frozen_parts_stay_frozen_and_get_no_optimizer_state():
    model = build_map_detector(preset="tiny", seed=0)
    apply_stage(model, 2)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if n.split(".")[0] in ("vision", "llm")}
    assert frozen and not any(p.requires_grad for n, p in model.named_parameters() if n in frozen)
    groups = parameter_groups(model, 1e-5, 1e-4, 1e-4, 1e-6)
    assert {g["name"] for g in groups} == {"q", "m", "d"}
    opt = torch.optim.AdamW(groups)
    rng = np.random.default_rng(1)
    targets = [make_targets(*random_instances(rng, 4)) for _ in range(2)]
    model(_images(), return_loss=True, targets=targets)["loss_total"].backward()
    opt.step()
    params = dict(model.named_parameters())
    for n, before in frozen.items():
        assert torch.equal(params[n], before), n
        assert params[n].grad is None
        assert params[n] not in opt.state
    assert all(p in opt.state for g in groups for p in g["params"])
    # stage 3 with LoRA: only the adapters of the LLM train, CLIP stays frozen
    apply_stage(model, 3, lora_r=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("llm.")]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any(p.requires_grad for p in model.vision.parameters())


def test_targets_hold_every_equivalent_order():
    rng = np.random.default_rng(2)
    labels, pts, closed = random_instances(rng, 6)
    pts[0, -1] = pts[0, 0]
    closed[0] = True
    t = make_targets(labels, pts, closed)
    assert t.orders.shape == (6, MAX_ORDERS, NUM_POINTS, 2)
    for i in range(6):
        expected = normalize(equivalent_orders(pts[i], bool(closed[i])))
        k = len(expected)
        assert int(t.order_mask[i].sum()) == k
        np.testing.assert_allclose(t.orders[i, :k].numpy(), expected, atol=1e-6)


def test_decode_scores_follow_the_softmax_and_points_are_metres():
    logits = torch.full((1, 3, 4), -10.0)
    logits[0, 0, 1] = 5.0  # a confident crossing
    logits[0, 1, 3] = 5.0  # a confident no-object
    logits[0, 2, 0] = 1.0
    logits[0, 2, 3] = 1.0  # divider and no-object tie: score about 0.5
    points = torch.full((1, 3, NUM_POINTS, 2), 0.5)
    points[0, 0, :, 0] = 1.0
    pred = decode(logits, points)[0]
    assert pred.labels.tolist() == [1, 0, 0]
    assert pred.scores[0] > 0.99 and pred.scores[1] == pytest.approx(0.5, abs=1e-3) and pred.scores[2] < 1e-3
    np.testing.assert_allclose(pred.points[0, :, 0], 15.0)
    np.testing.assert_allclose(pred.points[1:], 0.0, atol=1e-6)
    vec = pred.to_vectors()[0]
    assert vec["cls_name"] == "ped_crossing" and len(vec["pts"]) == NUM_POINTS


def test_save_load_gives_identical_predictions(tmp_path, tiny):
    save_detector(tiny, tmp_path / "det")
    loaded = load_detector(tmp_path / "det")
    with torch.no_grad():
        a, b = tiny(_images()), loaded(_images())
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_points"], b["pred_points"])
    # a fork's .pth with model_state_dict reads the same, with weights_only=True
    torch.save({"model_state_dict": {"module." + k: v for k, v in tiny.state_dict().items()}, "epoch": 3},
               tmp_path / "fork.pth")
    forked = load_detector(tmp_path / "det", weights=tmp_path / "fork.pth")
    with torch.no_grad():
        assert torch.equal(forked(_images())["pred_points"], a["pred_points"])
    with pytest.raises(DetectorCheckpointError, match="not a map detector checkpoint"):
        load_detector(tmp_path)


def _write_tiny_blip2(folder, qformer_width=32, queries=4, vision_width=24):
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    torch.manual_seed(3)
    cfg = Blip2Config(
        vision_config=dict(hidden_size=vision_width, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                           image_size=28, patch_size=14),
        qformer_config=dict(hidden_size=qformer_width, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, encoder_hidden_size=vision_width, cross_attention_frequency=1),
        text_config=dict(model_type="opt", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, ffn_dim=64,
                         vocab_size=100, word_embed_proj_dim=32),
        num_query_tokens=queries)
    model = Blip2ForConditionalGeneration(cfg)
    model.save_pretrained(folder)
    return model


def test_blip2_folder_maps_into_the_qformer_and_query_tokens(tmp_path):
    blip2 = _write_tiny_blip2(tmp_path / "blip2")
    det = build_map_detector(preset="tiny", qformer_pretrained=str(tmp_path / "blip2"), seed=0)
    assert det.qformer.num_query_tokens == 4 and det.config.num_query_tokens == 4
    assert torch.equal(det.qformer.query_tokens, blip2.query_tokens)
    ours, theirs = det.qformer.qformer.state_dict(), blip2.qformer.state_dict()
    assert set(ours) == set(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    # BLIP-2's cross-attention expects 24-wide features, the tiny CLIP gives 32: an adapter bridges them
    assert det.qformer.vision_adapter.weight.shape == (24, 32)
    with torch.no_grad():
        assert det(_images())["pred_points"].shape == (2, NUM_QUERIES, NUM_POINTS, 2)


def test_blip2_loader_refuses_other_folders(tmp_path):
    from lisa.map.checkpoint.sources import SourceError

    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(SourceError, match="not a BLIP-2 folder"):
        build_map_detector(preset="tiny", qformer_pretrained=str(tmp_path / "llama"))
    with pytest.raises(SourceError, match="BLIP-2 folder not found"):
        build_map_detector(preset="tiny", qformer_pretrained=str(tmp_path / "nowhere"))


def test_llm_from_a_folder_and_from_a_llava_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from lisa.checkpoint.tiny import make_tiny_llava
    from lisa.map.checkpoint.sources import SourceError

    torch.manual_seed(0)
    llm = AutoModelForCausalLM.from_config(LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=1,
                                                       num_attention_heads=4, vocab_size=300))
    llm.save_pretrained(tmp_path / "llm")
    det = build_map_detector(llm_path=str(tmp_path / "llm"), preset="tiny", tokenizer="bytes", seed=0).eval()
    assert torch.equal(det.llm.get_input_embeddings().weight, llm.get_input_embeddings().weight)
    assert det.visual_proj.out_features == 48
    save_detector(det, tmp_path / "det")  # the LLM is read again from its folder, not stored
    from safetensors import safe_open
    with safe_open(str(tmp_path / "det" / "model.safetensors"), "pt") as f:
        assert not any(k.startswith("llm.") for k in f.keys())
    with torch.no_grad():
        assert torch.equal(load_detector(tmp_path / "det")(_images())["pred_points"], det(_images())["pred_points"])

    llava, _ = make_tiny_llava(tmp_path / "llava", version="v1.5")
    det2 = build_map_detector(llm_path=str(tmp_path / "llava"), preset="tiny", seed=0)
    assert torch.equal(det2.llm.get_input_embeddings().weight, llava.llm.get_input_embeddings().weight)
    with torch.no_grad():
        assert det2(_images())["pred_logits"].shape == (2, NUM_QUERIES, 4)

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "llama", "hidden_size": 8}')
    with pytest.raises(SourceError, match="does not load as a causal LM"):
        build_map_detector(llm_path=str(tmp_path / "broken"), preset="tiny", tokenizer="bytes")
