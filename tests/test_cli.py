import importlib
import subprocess
import sys

from braing3n.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_exits_2(capsys):
    assert main(["nonsense"]) == 2
    assert "unknown command 'nonsense'" in capsys.readouterr().err


def test_every_command_module_imports_and_has_main():
    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(getattr(mod, "main", None)), f"{name}: {module} has no main()"


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "braing3n", "atlas", "check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout
