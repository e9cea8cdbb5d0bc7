"""The README's two commands and .ci/run stay in step: CI runs the README's test command as
written, then the tests that command leaves out (the `slow` marker), so it runs everything."""
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not (ROOT / ".ci" / "run").exists() or not (ROOT / "README.md").exists(),
                                reason="not a source checkout")


def readme_commands():
    """The README's one-line bash blocks."""
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text)


def readme_test_command():
    commands = [c for c in readme_commands() if "pip install" in c and "pytest" in c]
    assert len(commands) == 1, commands
    return commands[0]


def pytest_marker_expression(command):
    """The -m expression of the last `python -m pytest` in a shell command line (None if none)."""
    words = shlex.split(command.split("&&")[-1])
    assert words[:3] == ["python", "-m", "pytest"], command
    return words[words.index("-m", 3) + 1] if "-m" in words[3:] else None


def test_ci_runs_the_readme_test_command():
    assert readme_test_command() in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_skips_the_slow_tests_and_ci_runs_them_after():
    assert pytest_marker_expression(readme_test_command()) == "not slow"
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    readme_at = lines.index(readme_test_command())
    slow = [i for i, line in enumerate(lines) if line.startswith("python -m pytest")
            and pytest_marker_expression(line) == "slow"]
    assert slow and slow[0] > readme_at, "the slow tests must run right after the README's command"


def test_slow_marker_is_registered_once():
    text = (ROOT / "pyproject.toml").read_text()
    assert len(re.findall(r'^\s*"slow:', text, re.M)) == 1


def test_readme_starts_with_install_and_run():
    first = readme_commands()[0]
    assert "pip install ." in first and first.endswith("cbackprop train")


def test_ci_builds_the_docs_with_warnings_as_errors():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    builds = [line for line in lines if line.startswith("python -m sphinx")]
    assert len(builds) == 1 and " -W " in builds[0] and " docs " in builds[0], builds
