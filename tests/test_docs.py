"""The documentation: the site builds in strict mode, README's example runs, the text describes the software."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_documentation_site_builds_in_strict_mode(tmp_path):
    """mkdocs.yml turns broken links, anchors, cross-references and unlisted pages into warnings,
    and strict mode turns warnings into a failed build."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: python -m pip install -e '.[docs]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    for page in ("index.html", "results/index.html", "api/models/index.html", "api/circuit/index.html",
                 "notebooks/03_the_circuit/index.html"):
        assert (tmp_path / "site" / page).is_file(), page


def test_readme_library_examples_run(tmp_path):
    """README's python blocks, one script in their order (the later ones use the first one's names)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert blocks, "README.md has no python example"
    script = tmp_path / "readme_example.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "net.npz").is_file(), "the example saves its trained network"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_documentation_describes_the_software_not_its_development(path):
    """The text describes the software, not its development: no log, no requests, no files outside the repository."""
    text = path.read_text(encoding="utf-8")
    for pattern in (r"\bsession [0-9]", r"\bthis machine\b", r"\bthe owner\b", r"\basked for\b", r"\bshared/"):
        found = re.search(pattern, text, re.I)
        assert found is None, f"{path.name}: {found.group(0)!r}"
