import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

import mlkit
from mlkit.cli import cli

RAW_LABELS = Path(__file__).resolve().parents[1] / "data" / "raw-labels.txt"


@pytest.fixture
def runner():
    return CliRunner()


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [(), *_commands(cli)], ids=" ".join)
def test_every_command_has_help(runner, path):
    result = runner.invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    assert len(result.output.splitlines()) > 3


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and mlkit.__version__ in result.output


def test_labels_command_resolves_the_reference_list(runner):
    result = runner.invoke(cli, ["data", "labels", str(RAW_LABELS)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "\t" in line]
    assert len(lines) == 404
    assert "Melanoma in situ\tmelanoma" in lines
    assert "0 unmapped" in result.stderr


def test_labels_command_fails_on_unmapped(runner, tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("# comment\nacne\nnot a real condition xyz\n\n")
    result = runner.invoke(cli, ["data", "labels", str(path)])
    assert result.exit_code == 1
    assert "not a real condition xyz\tUNMAPPED" in result.stdout
    assert "acne\tacne" in result.stdout


def test_prepare_needs_paths_without_config(runner, tmp_path):
    result = runner.invoke(cli, ["data", "prepare", "--out-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "--data-root is required without --config" in result.output


def test_prepare_rejects_bad_label_map(runner, tmp_path):
    result = runner.invoke(
        cli,
        [
            "data",
            "prepare",
            "--data-root",
            str(tmp_path),
            "--out-dir",
            str(tmp_path),
            "--label-map",
            "no-equals-sign",
        ],
    )
    assert result.exit_code == 2 and "expected RAW=TARGET" in result.output


def test_mlkit_errors_are_one_line_without_traceback(runner, tmp_path):
    result = runner.invoke(
        cli,
        [
            "data",
            "prepare",
            "--data-root",
            str(tmp_path / "nowhere"),
            "--out-dir",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 1
    assert (
        "Error: " in result.output and "data root is not a directory" in result.output
    )
    assert "Traceback" not in result.output


def test_config_errors_name_the_parameter(runner, tmp_path):
    config = tmp_path / "prepare.yaml"
    config.write_text(f"data_root: {tmp_path}\nout_dir: {tmp_path}\nsedd: 1\n")
    result = runner.invoke(cli, ["data", "prepare", "--config", str(config)])
    assert result.exit_code == 1 and "sedd" in result.output


def test_quiet_and_verbose_set_the_log_level(runner):
    runner.invoke(cli, ["-q", "data", "--help"])
    assert logging.getLogger().level == logging.WARNING
    runner.invoke(cli, ["-v", "data", "--help"])
    assert logging.getLogger().level == logging.DEBUG
