"""Dependencies point one way: a module imports only its own room and the rooms of lower layers.

The table below is the whole rule. Every module under ``lisa/`` must fall into one of its rooms
(the longest matching prefix wins), and a command's ``cli`` module is only ever reached through the
verb tables (``lisa.cli``, ``lisa.map.cli``), which import it by name at run time. Every import is
checked, also the ones inside functions. To add a room, add its prefix to the layer of its role.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "lisa"

# Top to bottom. A room (one prefix) may import itself and any room of a LOWER layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("commands", ("lisa", "lisa.__main__", "lisa.cli", "lisa.chat", "lisa.webui", "lisa.serve", "lisa.demo",
                  "lisa.map.demo")),
    ("training", ("lisa.train", "lisa.map.train")),
    ("evaluation", ("lisa.evaluation", "lisa.map.evaluation")),
    ("inference / export", ("lisa.inference", "lisa.export", "lisa.map.inference", "lisa.map.viz")),
    ("data", ("lisa.data", "lisa.map.data", "lisa.map.gt", "lisa.map.synth")),
    ("checkpoint", ("lisa.checkpoint", "lisa.map.checkpoint")),
    ("model", ("lisa.model", "lisa.map.model")),
    ("basics", ("lisa.tokenization", "lisa.conversation", "lisa.preprocess", "lisa.images", "lisa.dist", "lisa.verbs",
                "lisa.options", "lisa.precision", "lisa.map", "lisa.map.spec")),
    ("constants", ("lisa.constants",)),
]
# A map room builds on the general room of its own role (lisa.map.model on lisa.model, say), never the
# reverse: within a layer, a room under this prefix may import rooms outside it.
BUILDS_ON_SAME_LAYER = "lisa.map."


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def is_cli(module: str) -> bool:
    return module.rsplit(".", 1)[-1] == "cli"


def room(module: str) -> tuple[int, str] | None:
    """(layer index, room prefix); a ``cli`` or ``__main__`` module is always a command."""
    if is_cli(module) or module.endswith(".__main__"):
        return 0, module
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "lisa" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > len(best[1]):
                    best = (index, prefix)
    return best


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, module) for every ``lisa`` module that ``module`` imports."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:  # ``from pkg import submodule`` imports the submodule
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in modules else target))
    return [(line, t) for line, t in found if t == "lisa" or t.startswith("lisa.")]


def violations() -> list[str]:
    modules = all_modules()
    problems = []
    for module, path in modules.items():
        mine = room(module)
        if mine is None:
            problems.append(f"{module}: not in any room of LAYERS (tests/test_layering.py); add its prefix")
            continue
        for line, target in imports_of(module, path, modules):
            where = f"{path.relative_to(ROOT.parent)}:{line}"
            if is_cli(target) and module != target.rsplit(".", 1)[0] + ".__main__" \
                    and not (module == "lisa.__main__" and target == "lisa.cli"):
                problems.append(f"{where}: {module} imports the command module {target}; move what both "
                                "need below the commands")
                continue
            theirs = room(target)
            if theirs is None or theirs[1] == mine[1] or mine[0] == 0:
                continue
            same_layer_ok = (theirs[0] == mine[0] and mine[1].startswith(BUILDS_ON_SAME_LAYER)
                             and not theirs[1].startswith(BUILDS_ON_SAME_LAYER))
            if theirs[0] <= mine[0] and not same_layer_ok:
                problems.append(f"{where}: {module} ({LAYERS[mine[0]][0]}) imports {target} "
                                f"({LAYERS[theirs[0]][0]}), which is not below it")
    return problems


def test_dependencies_point_one_way():
    problems = violations()
    assert not problems, "\n".join(problems)


def test_the_check_sees_upward_and_command_imports(tmp_path, monkeypatch):
    """The checker itself: an upward import, a same-layer import and a cli import are each caught."""
    pkg = tmp_path / "lisa"
    for rel, text in {
        "__init__.py": "",
        "cli.py": "import importlib\n",
        "constants.py": "",
        "model/__init__.py": "from ..constants import *\n",
        "model/lisa.py": "from ..inference import pipeline\n",  # upward
        "data/__init__.py": "",
        "data/base.py": "from lisa.inference.cache import x\n",  # same layer, another room
        "inference/__init__.py": "",
        "inference/cache.py": "",
        "inference/pipeline.py": "from ..chat.cli import main\n",  # a command's cli module
        "chat/__init__.py": "",
        "chat/cli.py": "from ..inference.pipeline import LisaPipeline\n",  # commands may
        "map/__init__.py": "",
        "map/model/__init__.py": "from ...model import lisa\n",  # a map room on the general one
        "oddroom/__init__.py": "",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    monkeypatch.setitem(globals(), "ROOT", pkg)
    found = violations()
    assert any("lisa.model.lisa (model) imports lisa.inference.pipeline" in p for p in found)
    assert any("lisa.data.base (data) imports lisa.inference.cache" in p for p in found)
    assert any("imports the command module lisa.chat.cli" in p for p in found)
    assert any(p.startswith("lisa.oddroom: not in any room") for p in found)
    assert not any("lisa.chat.cli imports" in p or "lisa.map.model" in p for p in found), found
    assert len(found) == 4, found
