"""Data-parallel training: the ``torchrun`` launcher and the helpers its workers use.

One code path trains in one process or in many. :func:`fit_segmentation_model` (in
:mod:`sa2_pipeline.engine.fit`) checks :func:`launch_needed`: when the parameters ask for
``nproc_per_node * nnodes > 1`` processes and this process is not already a ``torchrun``
worker, :func:`launch` writes the run's :class:`~sa2_pipeline.engine.spec.FitSpec` to a
file, runs::

    python -m torch.distributed.run --nproc_per_node N --nnodes M --node_rank R \\
        --master_addr A --master_port P -m sa2_pipeline.engine.ddp_worker SPEC RESULT

and returns what the workers' rank 0 wrote to ``RESULT``, exactly what the single-process
call would have returned. Inside a worker (``WORLD_SIZE > 1``) the same function joins the
process group (:func:`join`) and trains under ``DistributedDataParallel``.

Before starting ``torchrun`` the launcher calls every callback's ``on_launch(env)`` with
the workers' environment, so a callback can hand state over to its copy in rank 0 (the
experiment tracker passes its run this way).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sa2_pipeline.io_utils import process_alive

if TYPE_CHECKING:
    from sa2_pipeline.engine.spec import FitSpec

logger = logging.getLogger(__name__)

# Validation runs on rank 0 while the other ranks wait in a collective: allow it time.
_COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)
_TMP_PREFIX = ".ddp-"


@dataclass(frozen=True)
class WorkerInfo:
    """Where this process sits in the ``torchrun`` job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def worker_info() -> WorkerInfo:
    """This process's rank, local rank and world size from ``torchrun``'s environment."""
    return WorkerInfo(
        rank=int(os.environ.get("RANK", "0")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        world_size=int(os.environ.get("WORLD_SIZE", "1")),
    )


def inside_worker() -> bool:
    """True in a process started by ``torchrun`` (or any launcher that sets its env)."""
    return "LOCAL_RANK" in os.environ or "WORLD_SIZE" in os.environ


def launch_needed(dist_cfg: Any) -> bool:
    """Whether ``fit_segmentation_model`` must start ``torchrun`` rather than train here."""
    return dist_cfg.nproc_per_node * dist_cfg.nnodes > 1 and not inside_worker()


# --------------------------------------------------------------------------- in a worker
def resolve_backend(requested: str, device_type: str) -> str:
    """``auto``: NCCL for CUDA devices, gloo for the CPU."""
    if requested == "auto":
        return "nccl" if device_type == "cuda" else "gloo"
    if requested == "nccl" and device_type != "cuda":
        raise ValueError(
            "training.distributed.backend 'nccl' needs CUDA devices; use 'gloo' (or 'auto') "
            "to train data-parallel on the CPU"
        )
    return requested


def join(stack: contextlib.ExitStack, backend: str, device: Any, worker: WorkerInfo) -> Any:
    """Join the job's process group for the life of ``stack``; return this rank's device.

    On CUDA each process takes the GPU of its local rank.
    """
    import torch

    if device.type == "cuda":
        device = torch.device("cuda", worker.local_rank)
        torch.cuda.set_device(device)
    stack.enter_context(process_group(resolve_backend(backend, device.type)))
    return device


@contextlib.contextmanager
def process_group(backend: str) -> Iterator[None]:
    """Join the ``torchrun`` process group for the block; leave it afterwards.

    A group that is already initialised (the caller runs its own DDP job) is used as it is
    and left alone.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    dist.init_process_group(backend=backend, timeout=_COLLECTIVE_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects)."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any, dst: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` as a list on rank ``dst`` (``None`` elsewhere)."""
    import torch.distributed as dist

    out = [None] * dist.get_world_size() if dist.get_rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def all_reduce_sum(values: list[float], device: Any) -> list[float]:
    """Sum a few numbers over all ranks (float64)."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.tolist()]


# --------------------------------------------------------------------------- launcher
def launch(spec: FitSpec, *, run_folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run ``fit(spec)`` under ``torchrun`` and return its result.

    Args:
        spec: The run (``spec.train_cfg.distributed`` says how many processes).
        run_folder: The run's checkpoint folder: the spec and result go to a temporary
            folder inside it (removed afterwards), the launcher log beside ``last.pt``
            (removed after a success, kept and named after a failure).

    Raises:
        RuntimeError: ``torchrun`` exited with a non-zero code (names the code and log).
    """
    import torch

    from sa2_pipeline.engine.checkpoint import load_checkpoint

    dist_cfg = spec.train_cfg.distributed
    run_folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_launch_folders(run_folder)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=run_folder))
    log_path = run_folder / f"torchrun-node{dist_cfg.node_rank}.log"
    world = dist_cfg.nproc_per_node * dist_cfg.nnodes
    try:
        spec_path, result_path = tmp / "spec.pt", tmp / "result.pt"
        try:
            torch.save(spec, spec_path)
        except Exception as err:  # noqa: BLE001 - re-raised with what to do
            raise TypeError(
                "distributed training sends the call's arguments to the worker processes; "
                f"they must be picklable (callbacks included): {err}"
            ) from err
        cmd = [
            sys.executable, "-m", "torch.distributed.run",
            "--nproc_per_node", str(dist_cfg.nproc_per_node),
            "--nnodes", str(dist_cfg.nnodes),
            "--node_rank", str(dist_cfg.node_rank),
            "--master_addr", str(dist_cfg.master_addr),
            "--master_port", str(dist_cfg.master_port),
            "-m", "sa2_pipeline.engine.ddp_worker", str(spec_path), str(result_path),
        ]
        logger.info("launching %d training processes: %s (log: %s)", world,
                    " ".join(cmd), log_path)
        returncode = _run_tee(cmd, _worker_env(spec.callbacks), log_path)
        if returncode != 0:
            raise RuntimeError(
                f"distributed training ({world} processes) failed: torchrun exited with code "
                f"{returncode}; its output is in {log_path}. Checkpoints in {run_folder} are "
                "kept: rerun the same command to resume."
            )
        if not result_path.exists():
            raise RuntimeError(
                f"torchrun exited normally but no worker wrote {result_path}; see {log_path}"
            )
        result = load_checkpoint(result_path)  # weights-only, like every model file
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log_path.unlink(missing_ok=True)
    return result["bundle"], result["history"]


def _worker_env(callbacks: Sequence[Any]) -> dict[str, str]:
    env = dict(os.environ)
    for callback in callbacks:
        on_launch = getattr(callback, "on_launch", None)
        if on_launch is not None:
            on_launch(env)
    # Make the package importable in the workers even when it is not installed.
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


# Linux: the launched process asks for SIGTERM when its parent (us) dies, then becomes
# torchrun (the setting survives exec), so killing the pipeline stops torchrun and, through
# it, the workers: no orphan keeps training and writing checkpoints behind a rerun.
_DIE_WITH_PARENT = """\
import ctypes, os, signal, sys
parent = int(sys.argv[1])
try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except Exception:
    pass
if os.getppid() != parent:
    sys.exit("the launching process is gone")
os.execv(sys.argv[2], sys.argv[2:])
"""


def _run_tee(cmd: list[str], env: dict[str, str], log_path: Path) -> int:
    """Run ``cmd``; copy its output to our stderr and to ``log_path``; return its code."""
    if sys.platform.startswith("linux"):
        cmd = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *cmd]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert proc.stdout is not None
            for line in iter(proc.stdout.readline, b""):
                log.write(line)
                log.flush()
                with contextlib.suppress(Exception):
                    sys.stderr.write(line.decode(errors="replace"))
            return proc.wait()
        finally:
            if proc.poll() is None:  # we are being interrupted: stop the workers too
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _remove_stale_launch_folders(run_folder: Path) -> None:
    """Delete the spec/result folders of launchers that were killed (their pid is gone)."""
    if os.name != "posix":
        return
    for folder in run_folder.glob(f"{_TMP_PREFIX}*"):
        pid_text = folder.name[len(_TMP_PREFIX):].split("-", 1)[0]
        if not folder.is_dir() or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid() or process_alive(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        logger.info("removed %s, left by a killed launcher", folder)
