"""Label join: predictions wait for their labels (and labels for predictions) by id.

A join table is an arrival-ordered ring of fixed-width numpy rows plus an open-addressing
hash index, with compiled batch operations: a million waiting predictions cost about 50
bytes each (a Python dict of tuples would cost several hundred). Keys are the 64-bit
stable hashes of prediction ids (:func:`monitor.decode.hash_ids`).

Expiry is by event time in arrival order: the oldest-arrived entry leaves when it is older
than the cutoff (TTL) or when the table is over its memory bound; what leaves is counted.
"""

from __future__ import annotations

import io

import numba
import numpy as np

__all__ = ["JoinTable"]

_EMPTY = -1
_TOMB = -2


@numba.njit(cache=True)
def _mix(k):  # pragma: no cover - compiled
    k ^= k >> np.uint64(31)
    k *= np.uint64(0x9E3779B97F4A7C15)
    k ^= k >> np.uint64(29)
    return k


@numba.njit(cache=True)
def _find(index, keys, alive, key):  # pragma: no cover - compiled
    """(slot of key or -1, first free slot on its probe path)."""
    mask = index.size - 1
    h = np.int64(_mix(key) & np.uint64(mask))
    free = -1
    while True:
        p = index[h]
        if p == _EMPTY:
            return -1, (h if free < 0 else free)
        if p == _TOMB:
            if free < 0:
                free = h
        elif alive[p] and keys[p] == key:
            return h, free
        h = (h + 1) & mask


@numba.njit(cache=True)
def _put(index, keys, ts, f64, f32, alive, tail, new_keys, new_ts, new_f64, new_f32, accepted):  # pragma: no cover
    """Append rows whose key is not waiting already; returns the new tail and tombstones reused."""
    reused = 0
    for i in range(new_keys.size):
        slot, free = _find(index, keys, alive, new_keys[i])
        if slot >= 0:
            accepted[i] = False
            continue
        if index[free] == _TOMB:
            reused += 1
        keys[tail] = new_keys[i]
        ts[tail] = new_ts[i]
        f64[tail, :] = new_f64[i, :]
        f32[tail, :] = new_f32[i, :]
        alive[tail] = True
        index[free] = tail
        accepted[i] = True
        tail += 1
    return tail, reused


@numba.njit(cache=True)
def _take(index, keys, ts, f64, f32, alive, query, found, out_ts, out_f64, out_f32):  # pragma: no cover
    n = 0
    for i in range(query.size):
        slot, _ = _find(index, keys, alive, query[i])
        if slot < 0:
            found[i] = False
            continue
        p = index[slot]
        found[i] = True
        out_ts[i] = ts[p]
        out_f64[i, :] = f64[p, :]
        out_f32[i, :] = f32[p, :]
        alive[p] = False
        index[slot] = _TOMB
        n += 1
    return n


@numba.njit(cache=True)
def _evict(index, keys, ts, alive, head, tail, cutoff, max_alive, n_alive, out_pos):  # pragma: no cover
    """Drop entries from the head: older than cutoff, or while more than max_alive remain."""
    n_out = 0
    while head < tail:
        if not alive[head]:
            head += 1
            continue
        if ts[head] < cutoff or n_alive > max_alive:
            slot, _ = _find(index, keys, alive, keys[head])
            index[slot] = _TOMB
            alive[head] = False
            out_pos[n_out] = head
            n_out += 1
            n_alive -= 1
            head += 1
        else:
            break
    return head, n_out


@numba.njit(cache=True)
def _reindex(index, keys, alive, head, tail):  # pragma: no cover
    index[:] = _EMPTY
    mask = index.size - 1
    for p in range(head, tail):
        if alive[p]:
            h = np.int64(_mix(keys[p]) & np.uint64(mask))
            while index[h] != _EMPTY:
                h = (h + 1) & mask
            index[h] = p


class JoinTable:
    """Waiting rows keyed by 64-bit id hash, with a float64 and a float32 payload per row.

    ``n_f64`` columns keep full precision (times, regression labels); ``n_f32`` columns are
    for small codes and scores (exact for integers below 2**24).
    """

    def __init__(self, n_f64: int, n_f32: int, max_pending: int = 1_000_000, initial_capacity: int = 1024):
        if max_pending < 1:
            raise ValueError(f"join.max_pending must be >= 1, got {max_pending}")
        self.n_f64 = int(n_f64)
        self.n_f32 = int(n_f32)
        self.max_pending = int(max_pending)
        self._alloc(max(16, int(initial_capacity)))
        self.head = 0
        self.tail = 0
        self.n_alive = 0
        self._tombs = 0

    def _alloc(self, cap: int) -> None:
        self.capacity = cap
        self.keys = np.zeros(cap, dtype=np.uint64)
        self.ts = np.zeros(cap, dtype=np.float64)
        self.f64 = np.zeros((cap, self.n_f64), dtype=np.float64)
        self.f32 = np.zeros((cap, self.n_f32), dtype=np.float32)
        self.alive = np.zeros(cap, dtype=np.bool_)
        size = 1
        while size < 2 * cap:
            size <<= 1
        self.index = np.full(size, _EMPTY, dtype=np.int32 if cap < 2**31 else np.int64)

    def __len__(self) -> int:
        return self.n_alive

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.keys, self.ts, self.f64, self.f32, self.alive, self.index))

    def _compact(self, need: int) -> None:
        """Move live rows to the front; grow (x2) when they would fill over half of it."""
        live = np.flatnonzero(self.alive[self.head : self.tail]) + self.head
        cap = self.capacity
        while len(live) + need > cap // 2:
            cap *= 2
        keys, ts, f64, f32 = self.keys[live], self.ts[live], self.f64[live], self.f32[live]
        if cap != self.capacity:
            self._alloc(cap)
        else:
            self.alive[:] = False
        n = len(live)
        self.keys[:n], self.ts[:n], self.f64[:n], self.f32[:n] = keys, ts, f64, f32
        self.alive[:n] = True
        self.head, self.tail, self._tombs = 0, n, 0
        _reindex(self.index, self.keys, self.alive, 0, n)

    def put(self, keys: np.ndarray, ts: np.ndarray, f64: np.ndarray, f32: np.ndarray) -> np.ndarray:
        """Add rows; returns a bool mask of rows accepted (False: the id is already waiting)."""
        n = keys.size
        accepted = np.zeros(n, dtype=np.bool_)
        if n == 0:
            return accepted
        if self.tail + n > self.capacity or self._tombs + self.tail - self.head + n > self.capacity:
            self._compact(n)
        f64 = np.ascontiguousarray(f64, dtype=np.float64).reshape(n, self.n_f64)
        f32 = np.ascontiguousarray(f32, dtype=np.float32).reshape(n, self.n_f32)
        self.tail, reused = _put(
            self.index, self.keys, self.ts, self.f64, self.f32, self.alive, self.tail,
            np.ascontiguousarray(keys, dtype=np.uint64), np.ascontiguousarray(ts, dtype=np.float64),
            f64, f32, accepted,
        )
        self._tombs -= reused
        self.n_alive += int(accepted.sum())
        return accepted

    def take(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Remove and return the rows for ``keys``: (found mask, ts, f64, f32) aligned with keys."""
        n = keys.size
        found = np.zeros(n, dtype=np.bool_)
        out_ts = np.zeros(n)
        out_f64 = np.zeros((n, self.n_f64))
        out_f32 = np.zeros((n, self.n_f32), dtype=np.float32)
        if n and self.n_alive:
            got = _take(
                self.index, self.keys, self.ts, self.f64, self.f32, self.alive,
                np.ascontiguousarray(keys, dtype=np.uint64), found, out_ts, out_f64, out_f32,
            )
            self.n_alive -= got
            self._tombs += got
        return found, out_ts, out_f64, out_f32

    def expire(self, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Drop rows older than ``cutoff`` (arrival order) and any over ``max_pending``.

        Returns (ts, f64, f32) of the dropped rows so the caller can count them by model.
        """
        out = np.zeros(max(0, self.tail - self.head), dtype=np.int64)
        self.head, k = _evict(
            self.index, self.keys, self.ts, self.alive, self.head, self.tail,
            float(cutoff), self.max_pending, self.n_alive, out,
        )
        pos = out[:k]
        self.n_alive -= k
        self._tombs += k
        return self.ts[pos].copy(), self.f64[pos].copy(), self.f32[pos].copy()

    def rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Live rows in arrival order: (keys, ts, f64, f32) copies."""
        live = np.flatnonzero(self.alive[self.head : self.tail]) + self.head
        return self.keys[live], self.ts[live], self.f64[live], self.f32[live]

    # -- state ------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Live rows in arrival order as an .npz blob (binary: a million rows in JSON would not do)."""
        live = np.flatnonzero(self.alive[self.head : self.tail]) + self.head
        buf = io.BytesIO()
        np.savez(
            buf, kind=np.array("join_table"), version=np.array(1), keys=self.keys[live], ts=self.ts[live],
            f64=self.f64[live], f32=self.f32[live], max_pending=np.array(self.max_pending),
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, max_pending: int | None = None) -> JoinTable:
        z = np.load(io.BytesIO(data), allow_pickle=False)
        if str(z["kind"]) != "join_table" or int(z["version"]) != 1:
            raise ValueError(f"not a version-1 join_table blob (kind={z['kind']}, version={z['version']})")
        f64, f32 = z["f64"], z["f32"]
        t = cls(f64.shape[1], f32.shape[1], int(max_pending or z["max_pending"]), initial_capacity=2 * len(z["keys"]) + 16)
        t.put(z["keys"], z["ts"], f64, f32)
        return t
