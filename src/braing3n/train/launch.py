"""Start a training command over every GPU of the allocation: directly, torchrun, or srun + torchrun.

    python -m braing3n.train.launch [--nproc-per-node N] [--dry-run] -- braing3n train mae ...

- 0 or 1 GPU on one node: the command runs as is (exec, no wrapper process).
- several GPUs on one node: ``torchrun --standalone --nproc-per-node=G --no-python CMD``.
- several nodes (SLURM_JOB_NUM_NODES > 1): ``srun --overlap`` starts one torchrun per node with a
  c10d rendezvous on the first node of SLURM_JOB_NODELIST; torchrun starts G workers per node.

GPUs per node come from SLURM_GPUS_ON_NODE, else CUDA_VISIBLE_DEVICES, else torch's device count.
``--nproc-per-node`` overrides that (e.g. several CPU processes with gloo, as the tests do).
The engine resumes from ``<out>/checkpoints`` on its own, so a requeued or retried job just runs
the same command again. Snakemake's SLURM job step runs the rule under ``srun -n1``; the inner
``srun --overlap`` may share that step's resources, which is what lets it start the other nodes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LaunchPlan:
    nnodes: int
    nproc_per_node: int
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to the environment before exec

    @property
    def mode(self) -> str:
        if self.nnodes > 1:
            return "srun+torchrun"
        return "torchrun" if self.nproc_per_node > 1 else "direct"


def _visible_devices(value: str) -> int:
    """Count of devices in a CUDA_VISIBLE_DEVICES string ('' / '-1' / 'NoDevFiles' hide all)."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items or items[0] in ("-1", "NoDevFiles"):
        return 0
    return len(items)


def _slurm_count(value: str) -> int:
    """SLURM_GPUS_ON_NODE is a number; some versions write 'type:N' or a per-node list '4(x2)'."""
    head = value.split(",")[0].split("(")[0]
    return int(head.rsplit(":", 1)[-1])


def gpus_on_node(env: Mapping[str, str]) -> int:
    """GPUs this process may use on its node, from the scheduler's environment first."""
    if env.get("SLURM_GPUS_ON_NODE"):
        return _slurm_count(env["SLURM_GPUS_ON_NODE"])
    if "CUDA_VISIBLE_DEVICES" in env:
        return _visible_devices(env["CUDA_VISIBLE_DEVICES"])
    try:  # a workstation without a scheduler: ask the driver
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def num_nodes(env: Mapping[str, str]) -> int:
    """Nodes of the SLURM job (not of the current step, which Snakemake runs on one node)."""
    if not env.get("SLURM_JOB_ID"):
        return 1
    for name in ("SLURM_JOB_NUM_NODES", "SLURM_NNODES"):
        if env.get(name):
            return int(env[name])
    return 1


def first_node(env: Mapping[str, str]) -> str:
    """Hostname of the first node of the job: the rendezvous host."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise RuntimeError("multi-node launch needs SLURM_JOB_NODELIST in the environment (run inside a SLURM job)")
    out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
    return out.stdout.split()[0]


def rendezvous_port(env: Mapping[str, str]) -> int:
    """A port derived from the job id, so two jobs sharing a node do not collide."""
    return 20000 + int(env.get("SLURM_JOB_ID", "0") or 0) % 20000


def plan(cmd: list[str], env: Mapping[str, str], nproc_per_node: int | None = None,
         head: str | None = None) -> LaunchPlan:
    """The command line that runs ``cmd`` over the allocation described by ``env``."""
    if not cmd:
        raise ValueError("no command to launch: put it after '--'")
    nnodes = num_nodes(env)
    nproc = nproc_per_node if nproc_per_node is not None else max(1, gpus_on_node(env))
    if nproc < 1:
        raise ValueError(f"--nproc-per-node must be >= 1, got {nproc}")
    torchrun = [sys.executable, "-m", "torch.distributed.run"]
    if nnodes > 1:
        host = head or first_node(env)
        argv = ["srun", "--overlap", f"--nodes={nnodes}", f"--ntasks={nnodes}", "--ntasks-per-node=1",
                "--kill-on-bad-exit=1", *torchrun, f"--nnodes={nnodes}", f"--nproc-per-node={nproc}",
                "--rdzv-backend=c10d", f"--rdzv-endpoint={host}:{rendezvous_port(env)}",
                f"--rdzv-id={env.get('SLURM_JOB_ID', 'braing3n')}", "--no-python", *cmd]
    elif nproc > 1:
        argv = [*torchrun, "--standalone", f"--nproc-per-node={nproc}", "--no-python", *cmd]
    else:
        return LaunchPlan(nnodes, nproc, list(cmd))
    # torchrun's agent forwards only the signals it handles to the workers (default TERM, INT, HUP,
    # QUIT); SLURM's `--signal=USR1@120` warning would otherwise kill the agent before the workers
    # write the checkpoint their SIGUSR1 handler saves. torchrun reads PET_SIGNALS_TO_HANDLE (its
    # --signals-to-handle) and exports it as TORCHELASTIC_SIGNALS_TO_HANDLE, the name older torch reads.
    handled = env.get("PET_SIGNALS_TO_HANDLE") or env.get("TORCHELASTIC_SIGNALS_TO_HANDLE") or \
        "SIGTERM,SIGINT,SIGHUP,SIGQUIT"
    if "SIGUSR1" not in handled.split(","):
        handled += ",SIGUSR1"
    return LaunchPlan(nnodes, nproc, argv,
                      {"PET_SIGNALS_TO_HANDLE": handled, "TORCHELASTIC_SIGNALS_TO_HANDLE": handled})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        split = argv.index("--")
        own, cmd = argv[:split], argv[split + 1:]
    else:
        own, cmd = [], argv
    p = argparse.ArgumentParser(prog="python -m braing3n.train.launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc-per-node", type=int, default=None,
                   help="processes per node (default: GPUs on the node, at least 1)")
    p.add_argument("--dry-run", action="store_true", help="print the command line and exit")
    args = p.parse_args(own)
    try:
        lp = plan(cmd, os.environ, args.nproc_per_node)
    except (ValueError, RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"braing3n launch: {exc}", file=sys.stderr)
        return 2
    print(f"braing3n launch: {lp.mode}, {lp.nnodes} node(s) x {lp.nproc_per_node} process(es): "
          + " ".join(lp.argv), file=sys.stderr)
    if args.dry_run:
        print(" ".join(lp.argv))
        return 0
    if shutil.which(lp.argv[0]) is None and not os.path.exists(lp.argv[0]):
        print(f"braing3n launch: command not found: {lp.argv[0]}", file=sys.stderr)
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    os.environ.update(lp.env)
    os.execvp(lp.argv[0], lp.argv)  # replaces this process: signals (SLURM preemption) reach the trainer


if __name__ == "__main__":
    raise SystemExit(main())
