"""Process-group setup shared by training and evaluation.

Launched by ``deepspeed`` or ``torchrun`` the usual environment variables are there; a plain
``lisa train`` gets a one-process group of its own (free local port), so no launcher is needed.
On CPU the backend is gloo.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_env(local_rank: int | None = None) -> None:
    """Fill RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* for a single process when no launcher set them."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        os.environ.setdefault("LOCAL_RANK", str(local_rank or 0))
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", str(local_rank or 0))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))


def use_cuda() -> bool:
    return torch.cuda.is_available()


def backend() -> str:
    return "nccl" if use_cuda() else "gloo"


def init_deepspeed_distributed(local_rank: int | None = None) -> None:
    import deepspeed

    ensure_env(local_rank)
    if not use_cuda() and "__compatible_ops__" not in vars(deepspeed.ops):
        # DeepSpeed would probe every op with compiler runs and JIT-compile a shared-memory CPU
        # collective (minutes); training here uses torch's AdamW and gloo only, so no op is needed.
        from deepspeed.ops.op_builder.all_ops import ALL_OPS

        vars(deepspeed.ops)["__compatible_ops__"] = dict.fromkeys(list(ALL_OPS) + ["deepspeed_not_implemented"], False)
    if use_cuda():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    deepspeed.init_distributed(dist_backend=backend())


def init_torch_distributed() -> None:
    """For evaluation without DeepSpeed: a process group only when launched with several processes."""
    if dist.is_available() and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if use_cuda():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend())


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def device() -> torch.device:
    if use_cuda():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy on the collective backend's device; returned on t's device)."""
    if world_size() == 1:
        return t
    work = t.to(device()) if backend() == "nccl" else t.cpu()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(t.device)


def all_gather_objects(obj) -> list:
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
