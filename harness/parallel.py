"""One `harness eval` as several processes: which units each process runs, and how the processes of one job talk.

Two ways, which combine:
- `--shard I/N`: a scheduler's array job. Each shard is its own process with its own `--out`; `harness merge`
  (harness/merge.py) puts the shards' stores together afterwards.
- the ranks of one job started by `torchrun` or `accelerate launch` (RANK, WORLD_SIZE and LOCAL_RANK in the
  environment). Rank 0 alone writes OUT/results.db; every other rank writes a private store, OUT/.ranks/<rank>, which
  rank 0 merges at the end, or the next run merges first if the job was killed: a store never has two writers, and a
  finished unit is never lost.

Both split units with `assign`, a deterministic cost-balanced split, so every process computes the same one without
asking. Imports no torch at module level: a torch.distributed group (gloo, CPU tensors: it carries a few small
objects, never model data) is made only when WORLD_SIZE > 1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from harness.errors import HarnessError

T = TypeVar("T")

RANKS_DIR = ".ranks"  # OUT/.ranks/<rank>: the private stores of a job's ranks other than 0
# How long a rank waits for the others at a barrier: a rank that finished its units waits there for the slowest rank
# (torchrun stops every rank when one fails, so a long wait never outlives a dead job).
WAIT = timedelta(days=2)


@dataclass(frozen=True)
class Part:
    """Part `index` (0-based) of `count`: a shard of a run, or a rank of a job."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


def parse_shard(text: str) -> Part:
    """`--shard I/N`: the I-th of N shards, 1 <= I <= N (counted from 1, as `sbatch --array=1-N` numbers its tasks).
    A malformed value raises ValueError saying what was expected (cli.py puts the flag's name before it)."""
    index, slash, count = text.strip().partition("/")
    expected = f"expects I/N, shard I of N shards with 1 <= I <= N (e.g. 2/8), not '{text}'"
    try:
        part = Part(int(index) - 1, int(count))
    except ValueError:
        raise ValueError(expected) from None
    if not slash or part.count < 1 or not 0 <= part.index < part.count:
        raise ValueError(expected)
    return part


def assign(costs: Sequence[float], parts: int) -> list[int]:
    """The part (0 .. parts-1) of each unit, given each unit's estimated cost: greedy longest-processing-time. Units
    go in order of decreasing cost (plan order among equal costs), each to the part with the least cost so far (the
    lowest-numbered among equals), so no part ends more than the largest unit's cost above another. Deterministic:
    every shard and rank computes the same split from the same plan."""
    load = [0.0] * parts
    owner = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):  # sorted() is stable: ties keep plan order
        part = min(range(parts), key=lambda p: (load[p], p))
        owner[i] = part
        load[part] += costs[i]
    return owner


def share(items: Sequence[T], costs: Sequence[float], part: Part) -> list[T]:
    """The items of `part`, in their given order (see assign)."""
    return [item for item, owner in zip(items, assign(costs, part.count)) if owner == part.index]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        return int(value)
    except ValueError:
        raise HarnessError(f"{name}={value!r} in the environment is not an integer (torchrun sets it)") from None


class Ranks:
    """The processes of one job as torchrun or `accelerate launch` started them: this one's rank and their number.
    One process (no WORLD_SIZE, or 1) is rank 0 of 1, and every call below is then a no-op."""

    def __init__(self, rank: int = 0, size: int = 1):
        self.rank, self.size = rank, size

    @classmethod
    def from_env(cls) -> Ranks:
        """This process's rank; with WORLD_SIZE > 1, joins the job's gloo group (MASTER_ADDR/MASTER_PORT, as the
        launcher sets them) and, on a CUDA machine, takes the GPU of its LOCAL_RANK."""
        size = _env_int("WORLD_SIZE", 1)
        rank = _env_int("RANK", 0)
        if size < 1 or not 0 <= rank < size:
            raise HarnessError(f"RANK={rank} and WORLD_SIZE={size} in the environment: need 0 <= RANK < WORLD_SIZE")
        if size == 1:
            return cls()
        import torch
        import torch.distributed as dist

        if torch.cuda.is_available():  # `--device auto` and `cuda` then mean this rank's GPU
            torch.cuda.set_device(_env_int("LOCAL_RANK", 0) % torch.cuda.device_count())
        try:
            dist.init_process_group("gloo", rank=rank, world_size=size, timeout=WAIT)
        except (ValueError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise HarnessError(f"cannot join the job's processes (WORLD_SIZE={size}): {first}") from None
        return cls(rank, size)

    @property
    def part(self) -> Part:
        return Part(self.rank, self.size)

    @property
    def writer(self) -> bool:
        """Rank 0 writes the run's store and its report."""
        return self.rank == 0

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` (a small picklable object), on every rank."""
        if self.size == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def rank_dir(out: str | Path, rank: int) -> Path:
    """The private store folder of a rank other than 0."""
    return Path(out) / RANKS_DIR / str(rank)
