"""Distributed helpers. torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; without them everything is one process."""
import os
import re

import logging

import torch
import torch.distributed as dist

from util.process.devices import rng_state, seed_everything, set_rng_state

log = logging.getLogger(__name__)


def is_distributed():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if is_distributed() else int(os.environ.get("RANK", 0))


def world_size():
    return dist.get_world_size() if is_distributed() else 1


def local_rank():
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None else None


def node_rank():
    """The node this process runs on (torchrun's GROUP_RANK); 0 without torchrun."""
    return int(os.environ.get("GROUP_RANK", 0))


def is_main_process():
    return rank() == 0


def init_from_environment(device_type):
    """Start the process group when launched by torchrun (gloo on the CPU, NCCL on CUDA)."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1 or is_distributed():
        return False
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return True


def barrier():
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor):
    if not is_distributed():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor):
    if not is_distributed():
        return tensor
    return all_reduce_sum(tensor) / world_size()


def gather_from_ranks(tensor):
    """Concatenate `tensor` (batch first) over all ranks in rank order; batches may differ in size."""
    world = world_size()
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    counts = [int(c) for c in counts]
    longest = max(counts)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[:tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, counts)])


_control_group = None


def _control():
    """A gloo group over all ranks for small host-side agreements (the world itself when it is gloo)."""
    global _control_group
    if _control_group is None:
        _control_group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    return _control_group


def max_over_ranks(value):
    """The largest of an integer over all ranks (every rank must call it). It goes through a gloo group on the
    CPU, so with NCCL it costs no device synchronisation."""
    if not is_distributed():
        return value
    tensor = torch.tensor([int(value)], dtype=torch.int64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=_control())
    return int(tensor.item())


def broadcast_object(value):
    """Rank 0's `value` (picklable), on every rank (every rank must call it)."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0, group=_control())
    return holder[0]


def broadcast_from_main(tensor):
    """Fill the CPU `tensor` with rank 0's in place, over the gloo group (every rank must call it)."""
    if is_distributed():
        dist.broadcast(tensor, src=0, group=_control())
    return tensor


def gather_objects(value):
    """Every rank's `value` (picklable), in rank order, on every rank (every rank must call it)."""
    if not is_distributed():
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value, group=_control())
    return values


def rank_rng_states():
    """Each rank's random streams (devices.rng_state: Python, NumPy, torch's CPU and CUDA generators), in rank
    order, for the training state that rank 0 writes (every rank must call it)."""
    return gather_objects(rng_state())


def restore_rank_rng(saved, source="the training state"):
    """Put back this rank's streams from `saved`, one state per rank of the run that wrote them (a state from an
    older version holds rank 0's alone: a list of one). With as many processes as then, each rank continues its
    own streams exactly. With another number, rank 0 continues its stream and every other rank is seeded from
    rank 0's state and its rank (deterministic, so two such resumes agree), which rank 0 says in one WARNING."""
    here, world = rank(), world_size()
    if len(saved) == world:
        set_rng_state(saved[here])
        return
    if here == 0:
        log.warning("%s holds the random streams of %d process%s and this run has %d: rank 0 continues its stream, "
                    "the other ranks are seeded from it and their rank (random draws do not continue as they would "
                    "have with %d)", source, len(saved), "es" if len(saved) > 1 else "", world, len(saved))
    set_rng_state(saved[0])
    if here > 0:
        generator = torch.Generator()
        generator.set_state(saved[0]["torch"])
        seed_everything(int(torch.randint(0, 2 ** 62, (1,), generator=generator)), here)


def first_report(message):
    """The first rank's non-empty `message`, naming that rank, or None when no rank has one. Every rank must call
    it, and every rank gets the same answer: a fault seen by one rank stops them all, with one message."""
    if not is_distributed():
        return message or None
    messages = [None] * world_size()
    dist.all_gather_object(messages, message or None, group=_control())
    for source, text in enumerate(messages):
        if text:
            return f"{text} (on rank {source} of {len(messages)})"
    return None


def cleanup():
    global _control_group
    if is_distributed():
        dist.destroy_process_group()
    _control_group = None


# What gloo and NCCL report when another process of the group has gone (killed, crashed, its node lost).
PEER_LOST = re.compile(r"connection (closed|reset) by peer|broken pipe|communicator was aborted|socket timeout",
                       re.IGNORECASE)


class PeerLost(RuntimeError):
    """Another process of the run stopped, and this one cannot go on alone."""


def lost_peer(err):
    """What `err` says about a process of the group that has gone (e.g. 'Connection closed by peer'), or None when
    it is about something else."""
    match = PEER_LOST.search(str(err)) if is_distributed() and isinstance(err, RuntimeError) else None
    return match.group(0) if match else None


def unwrap(net):
    """The plain module under DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(net, "_orig_mod"):
            net = net._orig_mod
        elif isinstance(net, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            net = net.module
        else:
            return net
