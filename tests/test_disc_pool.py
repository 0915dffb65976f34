"""The on-disk ATME discriminator pool: round trips, persistence, multi-process access, errors."""
import multiprocessing
import pickle
import tracemalloc

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from models.atme.pool import DiscPool, test_time_maps


@pytest.fixture
def pool(tmp_path):
    return DiscPool.create(tmp_path / "run" / "disc_pool.npy", num_images=10, map_size=(3, 4), seed=1)


def test_create_fills_uniform_and_writes_round_trip(pool):
    assert len(pool) == 10 and pool.map_size == (3, 4)
    start = pool.read(range(10))
    assert start.shape == (10, 1, 3, 4) and start.dtype == torch.float32
    assert 0 <= start.min() and start.max() < 1 and start.std() > 0.1

    maps = torch.full((2, 1, 3, 4), 0.25, requires_grad=True) * 1  # non-leaf with grad: write must detach
    pool.write(torch.tensor([7, 2]), maps)
    after = pool.read([2, 7, 3])
    assert torch.all(after[:2] == 0.25)
    assert torch.equal(after[2], start[3])


def test_reopen_after_close_gives_same_values(pool):
    pool.write([0, 9], torch.arange(24, dtype=torch.float32).reshape(2, 1, 3, 4))
    before = pool.read(range(10))
    pool.close()
    reopened = DiscPool.open(pool.path, num_images=10, map_size=(3, 4))
    assert torch.equal(reopened.read(range(10)), before)


def test_same_seed_same_start_regardless_of_chunk(tmp_path):
    a = DiscPool.create(tmp_path / "a.npy", 50, (2, 2), seed=3, chunk=7).read(range(50))
    b = DiscPool.create(tmp_path / "b.npy", 50, (2, 2), seed=3, chunk=50).read(range(50))
    c = DiscPool.create(tmp_path / "c.npy", 50, (2, 2), seed=4).read(range(50))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_create_large_pool_in_chunks_without_holding_it(tmp_path):
    tracemalloc.start()
    try:
        pool = DiscPool.create(tmp_path / "big.npy", num_images=1_000_000, map_size=(2, 2), chunk=8192)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    file_bytes = 1_000_000 * 4 * 4
    assert len(pool) == 1_000_000
    assert peak < file_bytes / 20, f"peak {peak} bytes while writing a {file_bytes}-byte pool"
    assert 0 <= pool.read([999_999]).min() < 1
    assert not list(tmp_path.glob("*.tmp-*"))  # the temporary file was renamed into place


class _PoolSamples(Dataset):
    def __init__(self, reader, n):
        self.reader, self.n = reader, n

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        return {"index": index, "disc_prev": self.reader(index)}


@pytest.mark.slow
def test_pickled_reader_in_two_worker_loader(pool):
    pool.write(range(10), torch.arange(10, dtype=torch.float32).reshape(10, 1, 1, 1).expand(10, 1, 3, 4))
    clone = pickle.loads(pickle.dumps(pool))
    assert clone._array is None and torch.equal(clone.read([4]), pool.read([4]))
    loader = DataLoader(_PoolSamples(pool.reader(), 10), batch_size=3, num_workers=2,
                        multiprocessing_context="spawn")
    seen = {}
    for batch in loader:
        for i, m in zip(batch["index"].tolist(), batch["disc_prev"]):
            seen[i] = m
    assert sorted(seen) == list(range(10))
    assert all(torch.all(seen[i] == i) for i in range(10))


def _write_rows(path, rows, value, barrier):
    pool = DiscPool.open(path)
    barrier.wait()  # both processes hold the file open and write at the same time
    for row in rows:
        pool.write([row], torch.full((1, 1, 3, 4), value))
    pool.flush()


@pytest.mark.slow
def test_two_processes_write_disjoint_rows(pool):
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_write_rows, args=(pool.path, rows, value, barrier))
               for rows, value in ((range(0, 10, 2), 2.0), (range(1, 10, 2), 3.0))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    values = DiscPool.open(pool.path, writable=False).read(range(10))
    assert torch.all(values[0::2] == 2.0) and torch.all(values[1::2] == 3.0)


def test_shape_mismatch_names_sizes_and_fix(pool):
    with pytest.raises(ValueError, match=r"(?s)made for 10 images of 3 x 4.*now has 12 images of 3 x 4.*--name"):
        DiscPool.open(pool.path, num_images=12, map_size=(3, 4))
    with pytest.raises(ValueError, match=r"now has 10 images of 30 x 30"):
        DiscPool.open_or_create(pool.path, 10, (30, 30), resume=True)
    with pytest.raises(ValueError, match="do not fit"):
        pool.write([0], torch.zeros(1, 1, 4, 4))
    with pytest.raises(IndexError, match="outside 0..9"):
        pool.read([10])


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="--continue_train"):
        DiscPool.open(tmp_path / "nope.npy")
    np.save(tmp_path / "foreign.npy", np.zeros((3, 2), dtype=np.float64))
    with pytest.raises(ValueError, match="not a discriminator pool"):
        DiscPool.open(tmp_path / "foreign.npy")


def test_open_or_create_resumes_or_restarts(tmp_path):
    path = tmp_path / "disc_pool.npy"
    first = DiscPool.open_or_create(path, 4, (2, 2), resume=True)  # nothing to resume: fresh pool
    first.write([1], torch.full((1, 1, 2, 2), 0.75))
    first.flush()
    resumed = DiscPool.open_or_create(path, 4, (2, 2), resume=True)
    assert torch.all(resumed.read([1]) == 0.75)
    fresh = DiscPool.open_or_create(path, 4, (2, 2), resume=False)
    assert not torch.all(fresh.read([1]) == 0.75)


def test_read_only_pool_refuses_writes(pool):
    reader = DiscPool.open(pool.path, writable=False)
    with pytest.raises(RuntimeError, match="read-only"):
        reader.write([0], torch.zeros(1, 1, 3, 4))


def test_test_time_maps_statistics():
    gen = torch.Generator().manual_seed(0)
    maps = test_time_maps(64, (30, 30), std=0.001, generator=gen)
    assert maps.shape == (64, 1, 30, 30)
    assert abs(maps.mean().item() - 0.5) < 1e-4
    assert abs(maps.std().item() - 0.001) < 1e-4
    again = test_time_maps(64, (30, 30), generator=torch.Generator().manual_seed(0))
    assert torch.equal(maps, again)


def test_deferred_writes_land_by_the_next_write_read_or_flush(pool):
    """The trainer's write_deferred never makes the host wait; every map still reaches the file in time."""
    other_process_view = pool.reader()  # opens its own read-only mapping, as a loader worker does
    start = pool.read(range(10))
    first = torch.full((2, 1, 3, 4), 0.125)
    pool.write_deferred(torch.tensor([1, 4]), first)
    first += 1  # the caller may reuse its tensor: the pool kept a copy
    second = torch.full((1, 1, 3, 4), 0.75)
    pool.write_deferred([6], second)  # stores the first batch
    assert torch.all(other_process_view(1) == 0.125) and torch.all(other_process_view(4) == 0.125)
    assert torch.equal(other_process_view(6), start[6])  # the second batch is still pending
    assert torch.all(pool.read([6]) == 0.75)  # a read sees pending maps

    pool.write_deferred([9], torch.zeros(1, 1, 3, 4))
    pool.flush()  # the trainer flushes at the end of every epoch and before every checkpoint
    assert torch.all(other_process_view(9) == 0)

    # Bad input fails at the call that passed it, not at a later write or flush.
    with pytest.raises(IndexError, match="outside 0..9"):
        pool.write_deferred([10], torch.zeros(1, 1, 3, 4))
    with pytest.raises(ValueError, match=r"shape \(1, 1, 4, 4\) do not fit"):
        pool.write_deferred([3], torch.zeros(1, 1, 4, 4))
    pool.flush()


def test_converting_a_single_file_pool_survives_a_kill_before_its_metadata(tmp_path, monkeypatch):
    """An earlier version's `disc_pool.npy` becomes the two buffers; a process killed before the metadata is
    written leaves the old pool, which the next open converts again (it was moved away first, and lost)."""
    from models.atme import pool as pool_module
    old = DiscPool.create(str(tmp_path / pool_module.POOL_FILENAME), 3, (2, 2), seed=5)
    old.flush()
    maps = np.load(tmp_path / pool_module.POOL_FILENAME).copy()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies here
    with monkeypatch.context() as patch:
        patch.setattr(pool_module, "write_json", killed)
        with pytest.raises(KeyboardInterrupt):
            pool_module.EpochPool.open(str(tmp_path), 3, (2, 2), epoch=4)
    opened = pool_module.EpochPool.open(str(tmp_path), 3, (2, 2), epoch=4)
    assert np.array_equal(np.load(opened.reading.path), maps) and np.array_equal(np.load(opened.writing.path), maps)
    assert not (tmp_path / pool_module.POOL_FILENAME).exists()
