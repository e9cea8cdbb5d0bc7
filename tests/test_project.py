"""The README's two commands and .ci/run stay in step."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)


@pytest.mark.skipif(not (ROOT / ".ci" / "run").exists(), reason="not a source checkout")
def test_ci_runs_the_readme_test_command():
    test_cmd = [c for c in readme_commands() if "pytest" in c][0]
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci_lines


@pytest.mark.skipif(not (ROOT / "README.md").exists(), reason="not a source checkout")
def test_readme_starts_with_install_and_run():
    first = readme_commands()[0]
    assert "pip install ." in first and first.endswith("cbackprop train")
