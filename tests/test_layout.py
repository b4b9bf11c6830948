"""The package tree follows the EAGLE loop and imports run one way: a module may import from
its own layer or the layers before it, never from a later one (lazy imports included)."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "eagle_jax"
# Infrastructure first, then the loop's stages in order, then the CLI.
LAYERS = ["errors", "config", "distributed", "run", "llm", "world", "environment", "actions",
          "design", "agent", "loop", "commands", "cli", "__main__"]
RANK = {name: i for i, name in enumerate(LAYERS)}


def _layer(module: str) -> str:
  return module.split(".")[1]


def _imports(path: pathlib.Path):
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("eagle_jax"):
      for alias in node.names:
        yield f"{node.module}.{alias.name}" if node.module == "eagle_jax" else node.module
    elif isinstance(node, ast.Import):
      yield from (a.name for a in node.names if a.name.startswith("eagle_jax."))


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or
                 p.parent != PACKAGE)


def test_every_module_sits_in_a_known_layer():
  tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in MODULES}
  assert tops <= set(RANK), tops - set(RANK)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way(path):
  mine = RANK[path.relative_to(PACKAGE).parts[0].removesuffix(".py")]
  later = [m for m in _imports(path) if RANK[_layer(m)] > mine]
  assert not later, f"{path.relative_to(PACKAGE)} imports from a later layer: {later}"
