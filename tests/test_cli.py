import pytest

from selfloop.cli import format_reasons, format_row, main


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


def test_a_generation_row_shows_the_monitor_decisions_and_their_reasons():
    why = "the model's well-formed held-out samples fell below 92% of the base model's diversity"
    decisions = [
        {"action": a, "signal": "vendi_probe", "value": 30.1, "threshold": 31.72, "reason": why}
        for a in ("raise_temperature", "raise_reference_fraction")
    ] + [{"action": "wait", "signal": "kl_accepted", "value": 0.9, "threshold": 0.5,
          "reason": "drift, raised already"}]
    row = {"arm": "loop", "generation": 2, "eval": {"3": {"greedy_acc": 0.2, "k": 8, "pass_at_k": 0.4}},
           "monitor": decisions, "seconds": {"train": 1.0}}
    line = format_row(row, [3])
    shown = "raise_temperature (vendi_probe), raise_reference_fraction (vendi_probe), wait (kl_accepted)"
    assert f"monitor: {shown}" in line
    reasons = format_reasons(row)
    assert len(reasons) == 2  # one line per signal, not per action
    assert "why: vendi_probe 30.1 (threshold 31.72): " + why in reasons[0]
    assert reasons[1].strip() == "wait: kl_accepted 0.9 (threshold 0.5): drift, raised already"
    quiet = {**row, "monitor": []}
    assert format_reasons(quiet) == [] and "monitor" not in format_row(quiet, [3])
