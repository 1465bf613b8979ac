import pytest

from selfloop.cli import main


def test_cli_run_refuses_existing_workdir_and_reports_bad_params(tiny_overrides, tmp_path, capsys):
    args = ["run", "--params", "params.yaml", "--no-control"]
    for o in tiny_overrides:
        args += ["--set", o]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Held-out greedy accuracy" in out and "| 4 numbers |" in out
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["run", "--set", "train.stpes=3"]) == 2
    assert "unknown key(s) ['stpes']" in capsys.readouterr().err
    assert main(["run", "--params", str(tmp_path / "none.yaml")]) == 2


def test_ablate_help_names_every_built_in_arm(capsys):
    # The help is written out: the command line imports nothing of the loop until a command
    # runs, and selfloop.ablate pulls in the loop and numpy (about 0.2 s on every call).
    from selfloop.ablate import ARMS

    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    listed = text.split("ablation arms (", 1)[1].split(")", 1)[0]
    assert listed.split(", ") == list(ARMS)
