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


def test_bench_all_routes_the_anchor_and_goes_on_after_a_failure(monkeypatch, capsys):
    import importlib

    import braing3n.bench as bench

    seen = {}

    def fake(name, fail=False):
        def main(argv):
            seen[name] = list(argv)
            if fail:
                raise ValueError(f"{name} broke\nsecond line")
            return 0
        return main

    for name in bench.BENCHMARKS:
        monkeypatch.setattr(importlib.import_module(f"braing3n.bench.{name}"), "main", fake(name, name == "preprocess"))
    rc = bench.main(["all", "--out", "b", "--anchor", "a.py"])
    err = capsys.readouterr().err
    assert rc == 1 and "braing3n bench preprocess: preprocess broke" in err and "second line" not in err
    assert seen["dag"] == ["--out", "b"] and seen["tokenizer"] == seen["dit"] == ["--out", "b", "--anchor", "a.py"]
    assert "preprocess: failed, tokenizer: ok, dit: ok, dag: ok" in err


def test_bench_preprocess_skips_without_the_development_scans(monkeypatch, tmp_path, capsys):
    from braing3n.bench import preprocess

    monkeypatch.setattr(preprocess, "DEFAULT_SCANS", [tmp_path / "absent.nii.gz"])
    assert preprocess.main(["--out", str(tmp_path)]) == 0
    assert "skipped: the default scan" in capsys.readouterr().err
    assert preprocess.main(["--out", str(tmp_path), "--scans", str(tmp_path / "mine.nii.gz")]) == 1
    assert "mine.nii.gz: scan not found" in capsys.readouterr().err
