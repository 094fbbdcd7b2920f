"""The documents README.md and docs/README_evaluation.md point to exist in the repository (the
evaluation specification ships as docs/SMALL_TARGETS.md)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "README_evaluation.md"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_and_named_documents_exist(doc):
    text = doc.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path = target.split("#")[0]
        if path and not path.startswith(("http://", "https://", "mailto:")):
            assert (doc.parent / path).exists(), f"{doc.name} links to a missing {target}"
    for name in re.findall(r"`((?:docs/)?[A-Z][\w-]*\.md)`", text):  # SMALL_TARGETS.md, ...
        assert any((base / name).exists() for base in (doc.parent, ROOT, ROOT / "docs")), \
            f"{doc.name} names a missing {name}"


def test_small_targets_specification_ships_in_docs():
    spec = (ROOT / "docs" / "SMALL_TARGETS.md").read_text(encoding="utf-8")
    for section in ("8.1 Inputs", "8.2 Object definition", "8.3 Size buckets", "8.4 Metrics",
                    "8.5 Output formats", "8.6 Worked examples"):
        assert f"### {section}" in spec
    assert "[`docs/SMALL_TARGETS.md`](docs/SMALL_TARGETS.md)" in \
        (ROOT / "README.md").read_text(encoding="utf-8")


def test_space_card_license_is_the_repository_license():
    card = (ROOT / "docs" / "README_app.md").read_text(encoding="utf-8")
    declared = re.search(r"^license:\s*(\S+)", card, re.M)
    assert declared, "the Space card declares no license"
    first_line = (ROOT / "LICENSE").read_text(encoding="utf-8").splitlines()[0]
    assert declared.group(1).lower() == first_line.split()[0].lower(), \
        f"card says {declared.group(1)}, LICENSE says {first_line}"


def test_readme_states_the_limits_the_code_enforces():
    from zegformer.text import MAX_CLASSES, MAX_NAME_LENGTH

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    stated = re.findall(r"(\d[\d,]*) classes of at most (\d+) characters", text)
    assert stated, "README no longer states the class limits"
    for classes, length in stated:
        assert (int(classes.replace(",", "")), int(length)) == (MAX_CLASSES, MAX_NAME_LENGTH)


def test_readme_commands_name_modules_and_console_scripts_that_exist():
    import importlib.util
    import tomllib

    docs = [ROOT / "README.md", *ROOT.glob("docs/*.md")]
    text = "\n".join(p.read_text(encoding="utf-8") for p in docs)
    modules = set(re.findall(r"python -m (zegformer(?:\.\w+)*)", text))
    assert "zegformer.demo" in modules and "zegformer.train" in modules
    for name in sorted(modules):
        assert importlib.util.find_spec(name) is not None, f"README runs a missing {name}"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for command in set(re.findall(r"(?:`|bin/)(zegformer-[a-z]+)\b", text)):
        assert command in scripts, f"README names {command}, pyproject installs no such command"
    for command, target in scripts.items():
        module, _, attr = target.partition(":")
        assert importlib.util.find_spec(module) is not None, f"{command} -> missing {module}"
        source = Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")
        assert f"def {attr}(" in source, f"{command} -> {module} has no {attr}()"
