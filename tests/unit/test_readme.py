"""The README says what the code does: its settings tables and its two quick-start commands."""

from pathlib import Path

from logstream.config_doc import configuration_tables

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_configuration_tables_match_the_settings_code():
    assert configuration_tables() in README, "run: python -m logstream.config_doc"


def test_the_quick_start_runs_the_stack_and_the_tests_with_ci_s_own_command():
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [block.split("```")[0].strip() for block in quick_start.split("```sh\n")[1:]]
    assert len(commands) == 2
    assert commands[0].endswith("logstream up")
    assert commands[1] == "bash .ci/run"
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111
