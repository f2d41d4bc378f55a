"""`make gpu-check` / `gpu-check-demo` (braing3n.bench.gpu_check): the dry pass every CI run makes
at tiny shapes, and the interleaved anchor timing the GPU ratios come from."""

import torch

from braing3n.bench import anchor, gpu_check
from braing3n.provenance import read_table


def test_time_pairs_interleaves_and_ratios_are_anchor_over_project(monkeypatch):
    order, clock = [], [0.0]
    monkeypatch.setattr(anchor.time, "perf_counter", lambda: clock[0])

    def factory(side, cost):
        def make():
            def step():
                order.append(side)
                clock[0] += cost
            return step
        return make

    pair = anchor.Pair("m", "s", factory("p", 2.0), factory("a", 1.0), "d")
    (row,) = anchor.time_pairs([pair], rounds=4, warm=1)
    assert order == ["p", "a"] + ["p", "a", "a", "p", "p", "a", "a", "p"]  # warm-up, then ABBA
    assert row["project_step_s"] == 2.0 and row["anchor_step_s"] == 1.0 and row["ratio"] == 0.5
    order.clear()
    (row,) = anchor.time_pairs([anchor.Pair("m", "s", factory("p", 2.0), None, "d", hold_both=False)], 2)
    assert order == ["p", "p", "p", "p"] and row["ratio"] != row["ratio"]  # rebuilt + warmed per round; no anchor


def test_dry_pass_runs_every_step_and_writes_its_rows(tmp_path, caplog):
    caplog.set_level("INFO")
    threads = torch.get_num_threads()
    assert gpu_check.main(["--dry", "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads
    if not torch.cuda.is_available():
        assert "no CUDA device present" in caplog.text
    out = tmp_path / "dry"
    steps, prov = read_table(out / "train_steps.csv")
    assert prov["git_commit"] and prov["date"].endswith("UTC")
    assert sorted(steps["model"]) == sorted(["mae", "decoder", "dit", "mae compiled", "decoder compiled",
                                             "dit compiled"])
    assert steps["dry_pass"].all() and (steps["project_step_s"] > 0).all()
    if gpu_check.DEFAULT_ANCHOR.is_file():  # the development tree's anchor: a ratio per row
        assert (steps["ratio"] > 0).all() and (steps["anchor_step_s"] > 0).all()
    loader, _ = read_table(out / "loader.csv")
    assert list(loader["name"]) == ["mae", "loader", "mae+loader"] and (loader["vol_per_s"] > 0).all()
    assert loader["ratio_to_step_alone"].iloc[0] == 1.0 and loader["ratio_to_step_alone"].iloc[2] > 0
    hdbet, _ = read_table(out / "hdbet.csv")
    assert list(hdbet["mode"]) == ["fast", "accurate"] and not hdbet["ran_network"].any()
    sample, _ = read_table(out / "sample.csv")
    assert sample["nfe"].iloc[0] == 4 and sample["total_s"].iloc[0] > 0 and sample["decode_s"].iloc[0] > 0


def test_demo_dry_pass_steps_the_overlay_mae_and_collects_the_honest_check(tmp_path):
    assert gpu_check.main(["--demo", "--dry", "--out", str(tmp_path)]) == 0
    demo, _ = read_table(tmp_path / "dry" / "demo.csv")
    assert (demo["outcome"] == "collected").all() and (demo["pytest_exit"] == 0).all()
    assert "test_mae_beats_the_random_floor_on_a_planted_effect" in set(demo["test"])
    assert (demo["overlay"] == "config/demo_gpu.yaml").all()
