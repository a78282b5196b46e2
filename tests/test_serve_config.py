"""Serving configuration without a cluster: model specs and models files, a clear error when Ray is
missing, and the Ray Serve config documented in docs/serving.md builds an application."""

import json
import re
from pathlib import Path

import pytest

from lisa.serve.models import model_specs, parse_spec

DOC = Path(__file__).resolve().parent.parent / "docs" / "serving.md"


def test_replicas_without_ray_is_a_clear_error(monkeypatch, capsys, tiny_ckpt):
    import sys

    from lisa.serve.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as when it is not installed
    assert main(["--version", str(tiny_ckpt), "--replicas", "2"]) == 2
    err = capsys.readouterr().err
    assert "lisa[cluster]" in err and "Ray Serve" in err
    assert main(["--models", f"{tiny_ckpt}:replicas=2"]) == 2  # a spec with replicas asks for Ray too
    assert "lisa[cluster]" in capsys.readouterr().err


def test_bad_model_specs_stop_the_command_with_their_name(capsys, tiny_ckpt):
    from lisa.serve.cli import main

    assert main(["--models", f"{tiny_ckpt}:precision=fp12"]) == 2
    assert "fp12" in capsys.readouterr().err


def test_documented_serve_config_builds(tiny_ckpt, tmp_path):
    yaml = pytest.importorskip("yaml")
    serve = pytest.importorskip("ray.serve")
    from lisa.serve.cluster import build

    text = DOC.read_text()
    block = re.search(r"<!-- serve-config -->\s*```yaml\n(.*?)```", text, re.S).group(1)
    config = yaml.safe_load(block)
    (app,) = config["applications"]
    assert app["import_path"] == "lisa.serve.cluster:build" and app["route_prefix"] == "/"
    args = app["args"]
    for model in args["models"]:
        assert Path(model["path"]).is_absolute()
        model["path"] = str(tiny_ckpt)  # the same keys on a folder that exists here
    assert isinstance(build(args), serve.Application)
    # `serve run lisa.serve.cluster:build models="A B"` passes strings
    assert isinstance(build({"models": f"{tiny_ckpt}:name=a,replicas=2 {tiny_ckpt}:name=b", "max_batch": "4",
                             "decode_together": "false"}), serve.Application)
    with pytest.raises(ValueError, match="unknown argument"):
        build({"models": str(tiny_ckpt), "max_bacth": 4})
    with pytest.raises(ValueError, match="needs models"):
        build({})


def test_model_specs(tmp_path, tiny_ckpt):
    spec = parse_spec(f"{tiny_ckpt}:name=lisa,precision=bf16,replicas=2,quant=4bit,num_gpus=0.5")
    assert (spec.path, spec.name, spec.precision, spec.replicas, spec.quant, spec.num_gpus) == (
        str(tiny_ckpt), "lisa", "bf16", 2, "4bit", 0.5)
    assert parse_spec(str(tiny_ckpt)).name == tiny_ckpt.name
    assert parse_spec("org/model-7b").name == "org/model-7b"  # a hub id keeps its name
    assert parse_spec("org/model-7b@v2").name == "org/model-7b"
    filled = parse_spec(f"{tiny_ckpt}:precision=fp16").with_defaults({"precision": "fp32", "quant": "8bit"})
    assert (filled.precision, filled.quant) == ("fp16", "8bit")
    for bad, message in [(f"{tiny_ckpt}:precision=fp8", "precision"), (f"{tiny_ckpt}:colour=red", "unknown key"),
                         (f"{tiny_ckpt}:replicas=0", "replicas"), (f"{tiny_ckpt}:name=a b", "name")]:
        with pytest.raises(ValueError, match=message):
            parse_spec(bad)
    models = tmp_path / "models.json"
    models.write_text(json.dumps({"models": [{"path": str(tiny_ckpt), "name": "a", "load_in_4bit": True},
                                             {"path": str(tiny_ckpt), "name": "b", "replicas": 3}]}))
    a, b = model_specs([str(models)])
    assert (a.name, a.quant, b.name, b.replicas) == ("a", "4bit", "b", 3)
    with pytest.raises(ValueError, match="two models are called"):
        model_specs([str(tiny_ckpt), str(tiny_ckpt)])


def test_a_spec_loads_through_the_model_flags_loader(monkeypatch, tiny_ckpt):
    """4-bit / 8-bit, precision and the rest reach the loader that chat and app use."""
    import lisa.inference.flags as flags

    seen = []

    class Loaded:
        class cache:
            max_items = 0

    monkeypatch.setattr(flags, "load_pipeline", lambda args, merged_loader=None: seen.append(args) or Loaded())
    spec = parse_spec(f"{tiny_ckpt}:name=llava,quant=4bit,precision=fp16,conv_type=llava_llama_2")
    pipe = spec.with_defaults({"device": "cpu"}).load(max_new_tokens=77, cache_size=3)
    (args,) = seen
    assert (args.version, args.load_in_4bit, args.load_in_8bit, args.precision) == (str(tiny_ckpt), True, False, "fp16")
    assert (args.conv_type, args.device, args.max_new_tokens, pipe.cache.max_items) == ("llava_llama_2", "cpu", 77, 3)
