"""Decode + preprocess scans in worker processes that survive one another's death, in input order.

Each input file is decoded by `decode_scan`, which never raises: a file that cannot be read, is too large for its
header's claim (`brainage.data.transforms.check_claimed_size`) or fails validation comes back with a one-line reason.
A worker process can still die while decoding (the kernel's out-of-memory killer sends SIGKILL, a decoder library
segfaults). `ScanLoader` therefore runs its own pool instead of a torch DataLoader, whose iterator aborts the whole
run when a worker dies, without saying which file killed it (our choice; Lightning accepts any iterable):

- every worker tells the main process "started position p" before decoding and sends the decoded item back over its
  own pipe (no lock shared between workers, so a killed worker cannot leave one held);
- a collector thread in the main process dispatches tasks (up to `prefetch_factor` per worker, and no further ahead
  of the consumer than the window), receives items and watches the workers' sentinels. When a worker dies, the file
  it had started becomes an error row naming the file and the signal, the files queued behind it go to other
  workers, and a new worker takes its place. A rerun finds that row in the journal and does not decode the file
  again;
- items travel as numpy arrays through the pipe (plain pickling, no shared-memory file descriptors that a dead
  sender could no longer hand over); the copy costs about 1 ms per MB.

Memory is bounded by the window (`max(batch_size, workers) * prefetch_factor` items decoded ahead), never by the
number of files. Letters: X, Y, Z the model grid.
"""

from __future__ import annotations

import collections
import math
import multiprocessing
import signal
import threading
import zlib
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np
import torch
from nibabel.filebasedimages import ImageFileError

from brainage.data.inputs import undecodable_name
from brainage.data.transforms import DEFAULT_MAX_VOXELS, ImageError, check_claimed_size

__all__ = ["ScanLoader", "decode_scan", "explain_failure"]

_POLL_S = 0.05  # the collector re-checks what it may dispatch at least this often
_MAX_IDLE_DEATHS = 3  # per worker slot: workers that die before starting any file mean a broken setup


def explain_failure(path: str, err: BaseException) -> str:
    """One clear line naming the file, what was found and what was expected, from a decode/validation failure."""
    cause = err
    while cause.__cause__ is not None:  # MONAI wraps the reader's error in RuntimeErrors
        cause = cause.__cause__
    detail = " ".join(str(cause).split())
    if isinstance(cause, ImageError):
        return detail  # already names the file, what was found and what was expected
    if isinstance(cause, zlib.error) or "gzip" in detail.lower() or "crc check" in detail.lower():
        return f"{path}: corrupt gzip data ({detail}); expected a readable .nii.gz file"
    if isinstance(cause, EOFError) or "ended before" in detail or ("Expected" in detail and "bytes" in detail):
        return f"{path}: truncated file ({detail}); expected a complete NIfTI image"
    if isinstance(cause, ImageFileError):
        return f"{path}: not a NIfTI image ({detail}); expected a .nii or .nii.gz file"
    if isinstance(cause, MemoryError):
        return f"{path}: out of memory while decoding it; expected a scan that fits (see --max-voxels)"
    return f"{path}: cannot be read as a NIfTI image ({type(cause).__name__}: {detail})"


def _failed(index: int, error: str) -> dict:
    return {"index": index, "image": None, "affine": None, "error": error}


def decode_scan(index: int, path: str, transform: Callable[[dict], dict],
                max_voxels: int = DEFAULT_MAX_VOXELS) -> dict:
    """{"index", "image": (1, X, Y, Z) float32 numpy or None, "affine": (4, 4) or None, "error": reason or None}
    for one file; never raises for a bad file."""
    if not Path(path).is_file():
        if undecodable_name(path) is not None:
            return _failed(index, f"{path}: file name is not valid UTF-8 (its undecodable bytes are shown as \\xNN); "
                                  f"expected a UTF-8 file name: rename the file to predict it")
        found = "a folder" if Path(path).is_dir() else "nothing"
        return _failed(index, f"{path}: file not found (found {found}); expected a .nii or .nii.gz file")
    try:
        check_claimed_size(path, max_voxels)  # whatever loader the checkpoint's chain declares
        image = transform({"image": path})["image"]  # (1, X, Y, Z) MetaTensor
    except Exception as err:  # noqa: BLE001 - any decoder/validation failure becomes this row's reason
        return _failed(index, explain_failure(path, err))
    return {"index": index, "image": image.as_tensor().numpy(), "affine": np.asarray(image.affine, dtype=np.float64),
            "error": None}


def _died(path: str, exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        how = f"killed by {signal.Signals(-exitcode).name}"
        if -exitcode == signal.SIGKILL:
            how += ", as the out-of-memory killer does"
    else:
        how = f"exit code {exitcode}"
    return (f"{path}: the decode worker died while reading it ({how}); the file was skipped and the run went on "
            f"(if memory ran out: fewer --workers, or a lower --max-voxels refuses such files up front)")


def _work(conn: Connection, transform: Callable[[dict], dict], max_voxels: int) -> None:
    """Worker process: decode (position, index, path) tasks until None; announce each before decoding it."""
    torch.set_num_threads(1)  # workers decode; the main process keeps its threads for the model
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the main process, which stops the workers
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the main process went away
            return
        if task is None:
            return
        position, index, path = task
        conn.send(("started", position))
        conn.send(("done", position, decode_scan(index, path, transform, max_voxels)))


class _Worker:
    def __init__(self, context, transform: Callable[[dict], dict], max_voxels: int) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_work, args=(child, transform, max_voxels), daemon=True)
        self.process.start()
        child.close()
        self.assigned: collections.OrderedDict[int, tuple[int, str]] = collections.OrderedDict()  # pos -> task
        self.started: int | None = None


class _Collector:
    """The main process's side of the pool: dispatch, receive, replace dead workers (in a thread)."""

    def __init__(self, loader: ScanLoader) -> None:
        self.loader = loader
        self.context = multiprocessing.get_context()
        self.workers = [self._spawn() for _ in range(loader.num_workers)]
        self.todo = collections.deque(enumerate(loader.indices))  # (position, index) not yet dispatched
        self.ready: dict[int, dict] = {}
        self.consumed = 0  # the next position the consumer needs
        self.window = max(loader.batch_size, loader.num_workers) * loader.prefetch_factor
        self.idle_deaths = 0
        self.error: BaseException | None = None
        self.stop = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="brainage-decode", daemon=True)
        self.thread.start()

    def _spawn(self) -> _Worker:
        return _Worker(self.context, self.loader.transform, self.loader.max_voxels)

    def _dispatch(self) -> None:
        for worker in self.workers:
            while (self.todo and len(worker.assigned) < self.loader.prefetch_factor
                   and self.todo[0][0] < self.consumed + self.window):
                position, index = self.todo.popleft()
                task = (position, index, self.loader.paths[index])
                worker.assigned[position] = task[1:]  # requeued by _replace if the worker turns out dead
                try:
                    worker.conn.send(task)
                except OSError:  # the worker died: its sentinel says so in this round
                    break

    def _deliver(self, position: int, item: dict) -> None:
        with self.changed:
            self.ready[position] = item
            self.changed.notify_all()

    def _receive(self, worker: _Worker) -> bool:
        """Handle one message of `worker`; False when its pipe is closed or broken (the worker died)."""
        try:
            message = worker.conn.recv()
        except Exception:  # noqa: BLE001 - EOF, or a message cut off by the worker's death
            return False
        if message[0] == "started":
            worker.started = message[1]
        else:
            _, position, item = message
            worker.assigned.pop(position, None)
            worker.started = None
            self.idle_deaths = 0
            self._deliver(position, item)
        return True

    def _replace(self, worker: _Worker) -> None:
        """A worker died: drain what it sent, record its file as an error row, requeue the rest, start another."""
        while worker.conn.poll() and self._receive(worker):
            pass
        worker.process.join()
        culprit = worker.started if worker.started in worker.assigned else None
        if culprit is not None:
            index, path = worker.assigned.pop(culprit)
            self._deliver(culprit, _failed(index, _died(path, worker.process.exitcode)))
            self.idle_deaths = 0
        else:
            self.idle_deaths += 1
            if self.idle_deaths > _MAX_IDLE_DEATHS * len(self.workers):
                raise RuntimeError(f"decode workers keep dying before reading any file (exit code "
                                   f"{worker.process.exitcode}); rerun with --workers 0 to see the error")
        self.todo.extendleft(reversed([(p, index) for p, (index, _) in worker.assigned.items()]))
        worker.conn.close()
        self.workers[self.workers.index(worker)] = self._spawn()

    def _run(self) -> None:
        try:
            while not self.stop and (self.todo or any(w.assigned for w in self.workers)):
                with self.changed:
                    self._dispatch()
                by_conn = {w.conn: w for w in self.workers}
                by_sentinel = {w.process.sentinel: w for w in self.workers}
                for ready in wait([*by_conn, *by_sentinel], timeout=_POLL_S):
                    worker = by_conn.get(ready) or by_sentinel[ready]
                    if worker not in self.workers:
                        continue  # replaced earlier in this round
                    if ready in by_conn and self._receive(worker):
                        continue
                    worker.process.join(timeout=1)  # the pipe closed or broke, or the process ended
                    if worker.process.is_alive():
                        worker.process.kill()  # a broken pipe to a live worker: start that slot over
                    self._replace(worker)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, which raises it
            with self.changed:
                self.error = err
                self.changed.notify_all()

    def take(self, position: int) -> dict:
        """The item at `position`, waiting for it."""
        with self.changed:
            while position not in self.ready:
                if self.error is not None:
                    raise RuntimeError(f"decoding stopped: {self.error}") from self.error
                self.changed.wait(_POLL_S)
            self.consumed = position + 1
            return self.ready.pop(position)

    def close(self) -> None:
        """Stop the thread and the workers (killing those with files still queued: the consumer stopped early)."""
        self.stop = True
        self.thread.join()
        for worker in self.workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
            if worker.assigned:
                worker.process.kill()
        for worker in self.workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()


class ScanLoader:
    """Batches (lists) of `decode_scan` items for `paths[i]`, i in `indices` (default all), in that order.

    Args:
        num_workers: decode processes (0 = decode in this process, one file at a time).
        prefetch_factor: tasks queued per worker; the window of items decoded ahead is
            max(batch_size, num_workers) * prefetch_factor.
        max_voxels: refuse files whose header claims more voxels (before decoding them).
    """

    def __init__(self, paths: list[str], transform: Callable[[dict], dict], indices: list[int] | None = None,
                 batch_size: int = 4, num_workers: int = 1, prefetch_factor: int = 4,
                 max_voxels: int = DEFAULT_MAX_VOXELS) -> None:
        if batch_size < 1 or num_workers < 0 or prefetch_factor < 1:
            raise ValueError(f"batch_size={batch_size}, num_workers={num_workers}, prefetch_factor={prefetch_factor}: "
                             "expected >= 1, >= 0, >= 1")
        self.paths, self.transform, self.max_voxels = paths, transform, max_voxels
        self.indices = list(range(len(paths))) if indices is None else list(indices)
        self.batch_size, self.num_workers, self.prefetch_factor = batch_size, num_workers, prefetch_factor

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def _items(self) -> Iterator[dict]:
        if self.num_workers == 0:
            for index in self.indices:
                yield decode_scan(index, self.paths[index], self.transform, self.max_voxels)
            return
        collector = _Collector(self)
        try:
            for position in range(len(self.indices)):
                yield collector.take(position)
        finally:
            collector.close()

    def __iter__(self) -> Iterator[list[dict]]:
        batch = []
        for item in self._items():
            if item["image"] is not None:
                item["image"] = torch.from_numpy(item["image"])  # (1, X, Y, Z), no copy
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
