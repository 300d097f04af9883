"""The ewc-dqn command: its subcommands, and the entry points that lead to the same code."""

import pytest

import evaluate
import train_agent
from ewc_dqn import cli, cli_compare, cli_evaluate, cli_train, sweep


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "evaluate", "compare", "sweep", "audit", "export"):
        assert f"  {name} " in out


@pytest.mark.parametrize("argv", [[], ["nope"]])
def test_no_or_unknown_subcommand_is_bad_input(argv, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    usage = "usage: ewc-dqn {train,evaluate,compare,sweep,audit,export}"
    assert usage in captured.out + captured.err


@pytest.mark.parametrize("name", ["train", "evaluate", "compare", "sweep", "export"])
def test_each_subcommand_has_its_flags(name: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    assert f"usage: ewc-dqn {name}" in capsys.readouterr().out


def test_audit_takes_one_run_folder(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["audit"]) == 2
    assert "usage: ewc-dqn audit RUN_DIR" in capsys.readouterr().err


def test_the_scripts_are_the_same_commands() -> None:
    commands = {name: command for name, (command, _) in cli.COMMANDS.items()}
    assert commands["train"] is cli_train.main and commands["sweep"] is sweep.sweep_main
    assert commands["evaluate"] is cli_evaluate.main
    assert commands["compare"] is cli_compare.cli_main
    assert train_agent.cli_train is cli_train and evaluate.cli_evaluate is cli_evaluate
