"""The shared GPU-anchor runner: JSON model records from both COMPILE settings, failures reported."""


from braing3n.bench import dit, tokenizer
from braing3n.bench.anchor import run_anchor

FAKE = """
import json, os, sys
print("warming up")
for m in sys.argv[1:]:
    print(json.dumps({"model": m, "batch": 2, "compiled": os.environ["COMPILE"] == "1", "step_s": 0.5,
                      "samples_per_s": 4.0 if m != "dec" else 1.0, "achieved_tflops": 1.5}))
print(json.dumps({"device": "fake"}))
sys.exit(3 if os.environ["COMPILE"] == "1" and "fail" in sys.argv else 0)
"""


def test_anchor_records_from_eager_and_compiled_runs(tmp_path, capsys):
    path = tmp_path / "anchor.py"
    path.write_text(FAKE)
    recs = run_anchor(str(path), ["mae", "dec"], "bench x")
    assert [(r["model"], r["compiled"]) for r in recs] == [("mae", False), ("dec", False), ("mae", True),
                                                          ("dec", True)]
    rows = tokenizer.run_anchor(str(path))
    assert {r["name"] for r in rows} == {"anchor mae", "anchor dec"} and rows[1]["vol_per_s"] == 1.0
    assert rows[0]["tflops"] == 1.5
    rows = dit.run_anchor(str(path))
    assert len(rows) == 2 and all(r["stage"] == "anchor train" and r["samples_per_s"] == 4.0 for r in rows)
    assert {r["anchor_model"] for r in rows} == {"dit"}
    capsys.readouterr()
    recs = run_anchor(str(path), ["dit", "fail"], "bench dit")
    assert len(recs) == 4  # the compiled run still printed its records before exiting 3
    assert "bench dit: anchor" in capsys.readouterr().err


def test_dit_ratios_use_only_a_paper_size_anchor():
    train = {"stage": "train", "batch": 2, "compiled": False, "samples_per_s": 8.0}
    toy = {"stage": "anchor train", "anchor_model": "dit-tiny", "batch": 2, "compiled": False, "samples_per_s": 4.0}
    same, best = dit.anchor_ratios([train, toy])  # CPU: the anchor's 64-token toy is no reference
    assert all(v != v for v in same + best)
    real = {**toy, "anchor_model": "dit-xl-1200tok"}
    same, best = dit.anchor_ratios([train, real, {**real, "batch": 64, "samples_per_s": 16.0}])
    assert same[0] == 2.0 and best[0] == 0.5 and same[1] != same[1]
