"""ATME on several nodes: each node reads D_{t-1} from a copy of its own, fed through the process group.

A node other than rank 0's cannot read the run folder's pool: on a shared file system such as NFS, another
client's writes are only guaranteed visible after a close and a fresh open, and a persistent loader worker keeps
one mapping of the file for its whole life, so it could read maps of an older epoch. Instead, when the run starts,
rank 0 sends both buffers of the pool through the process group to one process per other node (its local rank 0),
which writes them to `<run_dir>/disc_pool_node<k>/`. From then on that process also stores every step's maps (all
ranks receive every rank's maps anyway: `ATMEModel.store_disc_maps` gathers them), so its copy always holds what
rank 0's pool holds. The node's processes and loader workers read that copy, written and read on one machine, so
its page cache keeps them coherent whatever the file system. The trainer's barrier after the end-of-epoch save
orders the last writes of epoch t before the first reads of epoch t + 1, on every node.

A single node (all ranks share one page cache) keeps reading the run folder's pool, as before.
"""
import logging
import os

import numpy as np
import torch

from models.atme.pool import EpochPool
from util.process import distributed

log = logging.getLogger(__name__)

CHUNK = 4096  # maps per broadcast at the start (4096 maps of 30x30: 15 MB)


def node_count():
    """How many nodes the run spans (torchrun's GROUP_RANK per node). Every rank must call it."""
    return distributed.max_over_ranks(distributed.node_rank()) + 1


def node_folder(run_dir, node):
    return os.path.join(run_dir, f"disc_pool_node{node}")


def keeps_node_copy():
    """Whether this process writes its node's copy of the pool: local rank 0 of a node other than rank 0's."""
    return distributed.node_rank() != 0 and (distributed.local_rank() or 0) == 0


def share_pool(pool, run_dir, num_images, map_size, epoch):
    """The EpochPool this rank reads on a run over several nodes; every rank calls it, rank 0 with the run's pool.
    Ranks on rank 0's node open the run folder's pool; the others get their node's copy."""
    main, node = distributed.is_main_process(), distributed.node_rank()
    meta = distributed.broadcast_object({"first_epoch": pool.first_epoch, "images": len(pool),
                                         "map_size": list(pool.map_size)} if main else None)
    copy = None
    if keeps_node_copy():
        os.makedirs(node_folder(run_dir, node), exist_ok=True)
        copy = EpochPool.create(node_folder(run_dir, node), meta["images"], meta["map_size"],
                                first_epoch=meta["first_epoch"], init="half")
    for index in range(2):
        for start in range(0, meta["images"], CHUNK):
            stop = min(meta["images"], start + CHUNK)
            if main:
                maps = torch.from_numpy(np.array(pool.buffers[index].array[start:stop], dtype=np.float32))
            else:
                maps = torch.empty((stop - start, 1, *meta["map_size"]), dtype=torch.float32)
            distributed.broadcast_from_main(maps)
            if copy is not None:
                copy.buffers[index].write(np.arange(start, stop), maps)
    if copy is not None:
        copy.flush()
        log.info("node %d: copied the discriminator pool (%d maps per buffer) to %s", node, meta["images"],
                 copy.folder)
    distributed.barrier()  # every node's copy is complete before anyone reads it
    if main:
        return pool
    if node == 0:
        return EpochPool.open(run_dir, num_images, map_size, epoch)
    return copy if copy is not None else EpochPool(node_folder(run_dir, node), meta, writable=False)
