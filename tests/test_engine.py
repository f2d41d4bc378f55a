"""The shared training engine: fits, resumes exactly, writes checkpoints atomically, shards data."""

from __future__ import annotations

import csv
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from braing3n.train import checkpoint as ck
from braing3n.train.engine import TrainConfig, fit, release_weights, train_config
from braing3n.train.sampling import batch_indices

torch.set_num_threads(1)


class ToyTask:
    """y = x @ w_true + noise; model has dropout so the loss consumes the global torch RNG."""

    name = "toy"

    def __init__(self, n: int = 64, dim: int = 8):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, dim, generator=g)
        self.y = self.x @ torch.randn(dim, 1, generator=g)
        self.batch_size = 4

    def build_model(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.1), torch.nn.Linear(16, 1))

    def batches(self, rank, world, seed, start_step):
        for idx in batch_indices(len(self.x), self.batch_size, rank, world, seed, start_step):
            yield self.x[idx], self.y[idx]

    def loss(self, model, batch, device):
        x, y = (t.to(device) for t in batch)
        loss = torch.nn.functional.mse_loss(model(x), y)
        return loss, {"mse": float(loss.detach())}

    def model_config(self) -> dict:
        return {"hidden": 16}


def cfg(**kw) -> TrainConfig:
    base = dict(steps=12, batch_size=4, grad_accum=2, lr=1e-2, warmup_steps=2, ema_decay=0.99, ckpt_every=4,
                log_every=2, seed=7, num_workers=0, grad_clip=1.0, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_model_fits_and_writes_outputs(tmp_path):
    out = fit(ToyTask(), cfg(steps=150, grad_accum=1, log_every=10, ckpt_every=50), tmp_path)
    assert out == tmp_path / "final_ema.safetensors" == release_weights(tmp_path)
    assert (tmp_path / "final.safetensors").exists() and (tmp_path / "config.json").exists()
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(10, 151, 10))
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < 0.2 * first, (first, last)
    assert abs(float(rows[-1]["lr"]) - 1e-3) < 1e-9  # cosine ends at min_lr_ratio * lr
    assert len(ck.list_checkpoints(tmp_path / "checkpoints")) == 2  # keep_checkpoints
    assert any((tmp_path / "tb").iterdir())
    # rerun in the same folder without EMA: the raw weights are released, not the old EMA file
    out = fit(ToyTask(), cfg(steps=4, ema_decay=0.0), tmp_path)
    assert out == tmp_path / "final.safetensors" == release_weights(tmp_path)
    assert not (tmp_path / "final_ema.safetensors").exists()


def test_resume_equals_uninterrupted(tmp_path):
    full = tmp_path / "full"
    fit(ToyTask(), cfg(), full)
    part = tmp_path / "part"
    fit(ToyTask(), cfg(), part, stop_at=5)  # "pre-empted" after step 5 (between checkpoints)
    assert not (part / "final.safetensors").exists()
    assert ck.load_latest(part / "checkpoints")["step"] == 5
    fit(ToyTask(), cfg(), part)  # automatic resume
    for name in ("final.safetensors", "final_ema.safetensors"):
        a, b = load_file(full / name), load_file(part / name)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (name, k)
    ra = list(csv.DictReader(open(full / "metrics.csv")))
    rb = list(csv.DictReader(open(part / "metrics.csv")))
    # the log window straddling the resume (steps 5-6) averages only the steps this process ran
    assert [r["loss"] for r in ra if r["step"] != "6"] == [r["loss"] for r in rb if r["step"] != "6"]
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    raw, ema = load_file(full / "final.safetensors"), load_file(full / "final_ema.safetensors")
    assert not torch.equal(raw["0.weight"], ema["0.weight"])


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    d = tmp_path / "checkpoints"
    ck.save_checkpoint({"step": 4, "x": torch.ones(3)}, d, 4)

    def crash(state, path):
        Path(path).write_bytes(b"partial")
        raise OSError("node died mid-write")

    monkeypatch.setattr(ck.torch, "save", crash)
    with pytest.raises(OSError):
        ck.save_checkpoint({"step": 8}, d, 8)
    monkeypatch.undo()
    assert [p.name for p in ck.list_checkpoints(d)] == ["step_00000004.pt"]
    assert ck.load_latest(d)["step"] == 4
    # a truncated newest file (e.g. disk full on a non-atomic copy) falls back to the previous one
    (d / "step_00000012.pt").write_bytes(b"garbage")
    assert ck.load_latest(d)["step"] == 4


def test_batch_indices_shard_and_resume():
    n, b, world = 10, 3, 2
    r0 = batch_indices(n, b, 0, world, seed=1)
    r1 = batch_indices(n, b, 1, world, seed=1)
    first = np.concatenate([next(r0), next(r1)])
    assert len(set(first.tolist())) == 6  # ranks disjoint within an epoch
    stream = [next(batch_indices(n, b, 0, world, 1, start_step=s)) for s in range(5)]
    again = batch_indices(n, b, 0, world, 1, start_step=0)
    assert all(np.array_equal(s, next(again)) for s in stream)
    epoch0 = np.concatenate([next(batch_indices(n, 5, r, 2, 1, 0)) for r in range(2)])
    assert sorted(epoch0.tolist()) == list(range(10))


def test_train_config_merges_sections():
    config = {"seed": 3, "device": "cpu",
              "train": {"engine": {"steps": 100, "batch_size": 2, "lr": 1e-4, "warmup_steps": 10, "ckpt_every": 50,
                                   "log_every": 10, "num_workers": 2, "grad_clip": None, "betas": [0.9, 0.99]},
                        "mae": {"steps": 7, "preset": "tiny"}}}
    c = train_config(config, "mae")
    assert (c.steps, c.seed, c.device, c.betas, c.extra) == (7, 3, "cpu", (0.9, 0.99), {"preset": "tiny"})
    with pytest.raises(ValueError, match="missing keys"):
        train_config({"train": {"mae": {"steps": 1}}}, "mae")


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    fit(ToyTask(), cfg(steps=4, ckpt_every=2), out)
    torch.distributed.destroy_process_group()


def test_ddp_two_ranks_gloo(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    state = ck.load_latest(tmp_path / "checkpoints")
    assert state["step"] == 4 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # per-rank RNG saved
    assert (tmp_path / "final.safetensors").exists()


class RngProbeTask(ToyTask):
    """Records the first random draw each rank makes after (re)starting."""

    def __init__(self, out: str):
        super().__init__()
        self.out, self.done = out, False

    def loss(self, model, batch, device):
        if not self.done:
            rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
            Path(self.out, f"draw_rank{rank}.txt").write_text(repr(float(torch.rand(1))))
            self.done = True
        return super().loss(model, batch, device)


def _resume_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    fit(RngProbeTask(out), cfg(steps=4, ckpt_every=2), out)
    torch.distributed.destroy_process_group()


def test_resume_on_more_ranks_gives_each_new_rank_its_own_stream(tmp_path):
    """A one-process checkpoint resumed by two ranks: rank 1 must not replay rank 0's masks/noise."""
    fit(ToyTask(), cfg(steps=4, ckpt_every=2), tmp_path, stop_at=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_resume_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    draws = [float((tmp_path / f"draw_rank{r}.txt").read_text()) for r in (0, 1)]
    assert draws[0] != draws[1]
    state = ck.load_latest(tmp_path / "checkpoints")
    assert state["step"] == 4 and len(state["rng"]) == 2


class SignalledTask(ToyTask):
    """Sends itself SIGTERM (what SLURM does on pre-emption) during step ``at``."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def loss(self, model, batch, device):
        self.calls += 1
        if self.calls == self.at * 2:  # grad_accum = 2 micro-batches per step
            os.kill(os.getpid(), signal.SIGTERM)
        return super().loss(model, batch, device)


def test_sigterm_checkpoints_and_resumes(tmp_path):
    with pytest.raises(SystemExit, match="stopped by signal at step 3"):
        fit(SignalledTask(at=3), cfg(), tmp_path / "part")
    assert ck.load_latest(tmp_path / "part" / "checkpoints")["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    fit(ToyTask(), cfg(), tmp_path / "part")
    fit(ToyTask(), cfg(), tmp_path / "full")
    a, b = load_file(tmp_path / "full" / "final.safetensors"), load_file(tmp_path / "part" / "final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_of_another_run_are_not_resumed(tmp_path, capsys):
    """A job rerun because its settings or data changed starts over; a retry of the same run resumes."""
    fit(ToyTask(), cfg(), tmp_path, stop_at=8)
    assert ck.load_latest(tmp_path / "checkpoints")["step"] == 8
    fresh = tmp_path / "fresh"
    fit(ToyTask(), cfg(lr=5e-3), fresh)
    fit(ToyTask(), cfg(lr=5e-3), tmp_path)  # lr changed: the step-8 checkpoint must not be used
    assert "from another run" in capsys.readouterr().err
    for name in ("final.safetensors", "final_ema.safetensors"):
        a, b = load_file(fresh / name), load_file(tmp_path / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == list(range(2, 13, 2))  # logged from the start again

    class OtherData(ToyTask):
        def data_key(self):
            return "other"

    part = tmp_path / "data"
    fit(ToyTask(), cfg(), part, stop_at=4)
    fit(OtherData(), cfg(), part, stop_at=6)  # same settings, other training data: starts over
    assert "from another run" in capsys.readouterr().err
    assert ck.load_latest(part / "checkpoints")["step"] == 6
    fit(OtherData(), cfg(), part)  # the same run again: resumes from step 6
    assert "resumed from step 6" in capsys.readouterr().err
