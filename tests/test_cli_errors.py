"""Common CLI mistakes end in one clear stderr line and exit code 1, not a traceback."""
import pytest

from cross4d_core.cli import build_parser, main


def _subcommands() -> list[list[str]]:
    parser = build_parser()
    top = parser._subparsers._group_actions[0].choices
    commands = [[name] for name in top]
    commands += [["data", action] for action in top["data"]._subparsers._group_actions[0].choices]
    return commands


@pytest.mark.parametrize("command", _subcommands(), ids=" ".join)
def test_every_subcommand_help_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: cross4d {' '.join(command)}")


@pytest.mark.parametrize("argv, expected", [
    (["data", "info", "{tmp}/nonexistent"], "cross4d data info: error: {tmp}/nonexistent/manifest.json: missing"),
    (["data", "from-bag", "--bag", "{tmp}/nonexistent", "--out", "{tmp}/out", "--quiet"],
     "cross4d data from-bag: error: {tmp}/nonexistent: no such bag"),
    (["data", "convert", "--format", "msr", "--src", "{tmp}", "--out", "{tmp}/out", "--quiet"],
     "cross4d data convert: error: {tmp}: no MSR-Action3D files"),
    (["synth", "--out", "{tmp}/out", "--subjects", "1", "--quiet"],
     "cross4d synth: error: generate_synthetic_dataset: need num_subjects >= 2"),
    (["probe", "--checkpoint", "{tmp}/nonexistent", "--dataset", "{tmp}"],
     "cross4d probe: error: {tmp}/nonexistent/config.json: missing"),
    (["pretrain", "--set", "optim.nosuch=1"], "cross4d pretrain: error: "),
])
def test_bad_input_is_one_line_and_exit_code_1(argv, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default configs must not depend on the working directory
    monkeypatch.delenv("CROSS4D_TRACEBACK", raising=False)
    code = main([a.format(tmp=tmp_path) for a in argv])
    err_lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 1
    assert len(err_lines) == 1 and "Traceback" not in err_lines[0]
    assert err_lines[0].startswith(expected.format(tmp=tmp_path))
    assert not (tmp_path / "out").exists()  # nothing half-made is left behind
    if argv[0] == "pretrain":
        assert "unknown key(s) ['optim.nosuch']" in err_lines[0]


def test_traceback_env_reraises(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSS4D_TRACEBACK", "1")
    with pytest.raises(ValueError, match="manifest.json"):
        main(["data", "info", str(tmp_path / "nonexistent")])
