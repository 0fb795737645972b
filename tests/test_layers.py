"""The layers of ../DESIGN.md hold: no import runs up a layer, and recall and policies do not import each other.

Why read the source (ast) and not import it: an import inside a function runs up a layer just the same, only
later; walking every `import` node of every module sees those too, and needs no server to start. The rules:
- `fake_servers` never imports `harness` (the lab is built on the servers, not the other way round);
- `fake_servers.store` imports none of the code above it (smtp, imap, recall, policies, the pipeline, the domain);
- `fake_servers.recall` and `fake_servers.policies` do not both import each other (policies registers the recall
  policy and applies the legal-hold rule, so the arrow runs policies -> recall only).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: What the store must not import: everything of fake_servers that is built on it.
ABOVE_STORE = ("fake_servers.smtp", "fake_servers.imap", "fake_servers.recall", "fake_servers.policies",
               "fake_servers.pipeline", "fake_servers.domain")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool = False) -> Iterator[str]:
    """Every module `module` imports (absolute names, `recall_lab.` dropped as the folders are named; relative
    imports resolved), wherever the import stands."""
    for name in _imports_of(source, module, is_package):
        yield name.removeprefix("recall_lab.")


def _imports_of(source: str, module: str, is_package: bool = False) -> Iterator[str]:
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target
            # `from fake_servers import policies` imports the package fake_servers.policies
            yield from (f"{target}.{alias.name}" for alias in node.names if alias.name != "*")


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the modules of this project it imports, for every module under fake_servers/ and harness/."""
    graph: dict[str, set[str]] = {}
    for top in ("fake_servers", "harness"):
        for path in sorted((root / top).rglob("*.py")):
            name = module_name(path, root)
            found = imports_of(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")
            graph[name] = {m for m in found if m.split(".")[0] in ("fake_servers", "harness")}
    return graph


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a rule of the module docstring, as 'importer -> imported (rule)'."""
    found = []
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            if _within(module, "fake_servers") and _within(target, "harness"):
                found.append(f"{module} -> {target} (the servers never import the harness)")
            if _within(module, "fake_servers.store") and any(_within(target, up) for up in ABOVE_STORE):
                found.append(f"{module} -> {target} (the store imports nothing built on it)")
    recall_to_policies = sorted(f"{m} -> {t}" for m, ts in graph.items() if _within(m, "fake_servers.recall")
                                for t in ts if _within(t, "fake_servers.policies"))
    policies_to_recall = [m for m, ts in graph.items() if _within(m, "fake_servers.policies")
                          and any(_within(t, "fake_servers.recall") for t in ts)]
    if recall_to_policies and policies_to_recall:
        found += [f"{edge} (fake_servers.recall and fake_servers.policies import each other)"
                  for edge in recall_to_policies]
    return found


def test_no_import_runs_up_a_layer() -> None:
    graph = import_graph(ROOT)
    assert "fake_servers.recall.policy" in graph and "fake_servers.store.base" in graph  # it read the tree
    assert violations(graph) == []


def test_policies_depend_on_recall_and_not_back() -> None:
    graph = import_graph(ROOT)
    assert "fake_servers.recall.policy" in graph["fake_servers.policies.recall"]
    assert not [t for m, ts in graph.items() if _within(m, "fake_servers.recall") for t in ts
                if _within(t, "fake_servers.policies")]


# --- the checker itself can fail --------------------------------------------------------------------------


@pytest.mark.parametrize(("module", "source", "rule"), [
    ("fake_servers.domain", "def f():\n    from harness.lab import Lab\n", "never import the harness"),
    ("fake_servers.store._core", "import fake_servers.imap.session\n", "store imports nothing"),
    ("fake_servers.store.maildir", "from ..recall import format\n", "store imports nothing"),
    ("fake_servers.store.base", "from fake_servers import pipeline\n", "store imports nothing"),
])
def test_a_forbidden_import_is_reported(module: str, source: str, rule: str) -> None:
    graph = {module: {m for m in imports_of(source, module) if m.split(".")[0] in ("fake_servers", "harness")}}
    found = violations(graph)
    assert found and all(rule in f and f.startswith(module) for f in found)


def test_a_cycle_between_recall_and_policies_is_reported() -> None:
    graph = {
        "fake_servers.policies.recall": set(imports_of("from fake_servers.recall.policy import RecallPolicy\n",
                                                       "fake_servers.policies.recall")),
        "fake_servers.recall.policy": set(imports_of("def f():\n    from ..policies import delayed_send\n",
                                                     "fake_servers.recall.policy")),
    }
    found = violations(graph)
    assert found and all("import each other" in f for f in found)
    assert any(f.startswith("fake_servers.recall.policy -> fake_servers.policies.delayed_send ") for f in found)


def test_relative_imports_resolve_from_a_package_init() -> None:
    assert set(imports_of("from .base import MailStore\n", "fake_servers.store", is_package=True)) == {
        "fake_servers.store.base", "fake_servers.store.base.MailStore"}
