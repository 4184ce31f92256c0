"""Functions run in spawned processes by the concurrency tests (importable by name)."""

import numpy as np


def upsert_worker(uri: str, worker: int, keys_per_batch: int, rounds: int, barrier,
                  storage_options=None) -> int:
    import toy  # registers the toy model in this process
    from rsembed_store import Embedding, PointBuffer, Request, Store, TemporalSpec, resolve

    store = Store.open(uri, storage_options=storage_options)
    rng = np.random.default_rng(worker)
    written = 0
    for r in range(rounds):
        # every worker writes the same new keys of this round, plus a few of its own
        points = [(i * 0.001, r * 0.001) for i in range(keys_per_batch)]
        points += [(100 + worker, r * 0.01 + i * 0.001) for i in range(5)]
        batch = [
            Embedding(
                request=resolve(Request("toy", PointBuffer(lon, lat, 100), TemporalSpec.year(2022))),
                vector=rng.standard_normal(8).astype(np.float32),
            )
            for lon, lat in points
        ]
        barrier.wait()
        store.put_many(batch)
        written += len(batch)
    return written


def steady_writer(uri: str, start: int, count: int, ready, stop, written) -> None:
    """Upsert new toy rows one small batch at a time until ``stop`` is set (or ``count`` rows);
    ``written`` (a shared integer) counts the rows committed."""
    import toy  # noqa: F401  (registers the toy model in this process)
    from rsembed_store import Embedding, PointBuffer, Request, Store, TemporalSpec, resolve

    store = Store.open(uri)
    rng = np.random.default_rng([start, 99])  # never the vectors a test seeded with a plain integer
    ready.set()
    while written.value < count and not stop.is_set():
        batch = [
            Embedding(
                request=resolve(Request("toy", PointBuffer(20 + (start + written.value + i) * 1e-4, 10.0, 100),
                                        TemporalSpec.year(2021))),
                vector=rng.standard_normal(8).astype(np.float32),
            )
            for i in range(10)
        ]
        store.put_many(batch)
        written.value += len(batch)


def overlapping_writer(uri: str, worker: int, barrier, rounds: int = 3, shared: int = 60, own: int = 20) -> int:
    """Each round: wait for the others, then put ``shared`` new keys every worker also puts, plus
    ``own`` of its own, in two put_many calls (so appends of one worker interleave with another's).
    Even workers learn which keys are held from their key prefixes after their first write,
    odd ones always from Lance."""
    import toy  # noqa: F401  (registers the toy model in this process)
    from rsembed_store import Embedding, PointBuffer, Request, Store, TemporalSpec, resolve

    store = Store.open(uri)
    rng = np.random.default_rng([worker, 3])
    if worker % 2 == 0:  # half the writers keep key prefixes from their second write on
        from rsembed_store import writes

        writes.PREFIXES_AFTER = 1
    for r in range(rounds):
        points = [(30 + i * 0.001, r * 0.01) for i in range(shared)]
        points += [(60 + worker, r * 0.1 + i * 0.001) for i in range(own)]
        rng.shuffle(points)
        batch = [Embedding(request=resolve(Request("toy", PointBuffer(lon, lat, 100), TemporalSpec.year(2020))),
                           vector=rng.standard_normal(8).astype(np.float32)) for lon, lat in points]
        barrier.wait()
        half = len(batch) // 2
        store.put_many(batch[:half])
        store.put_many(batch[half:])
    return 0


def hold_space_lock(root: str, space: str, ready) -> None:
    """Take a space's write lock and keep it until killed."""
    import time

    from rsembed_store.writes import space_lock

    with space_lock(root, space):
        ready.set()
        time.sleep(600)
