"""Per-document prefix KV cache with an LRU memory budget.

The encoder is causal, so the keys/values of a prefix never change when text after it changes.
Each document keeps the full-length keys/values of its last prefix (every layer, sliding ones
included, so the cache can be rolled back to any common prefix); a new request re-encodes only
the tokens after the longest common token prefix.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass
class PrefixEntry:
    """Token ids of an encoded prefix and, per layer, its keys and values [1, heads, len, dim]."""

    ids: list[int]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PrefixCache:
    """LRU over documents, bounded by `cap_mb` megabytes of keys and values."""

    def __init__(self, cap_mb: float = 256.0):
        self.cap_bytes = int(cap_mb * 1024 * 1024)
        self._entries: OrderedDict[str, PrefixEntry] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0

    def lookup(self, doc_id: str | None, ids: list[int]) -> tuple[PrefixEntry | None, int]:
        """The cached entry for a document and how many leading tokens of `ids` it covers."""
        if doc_id is None:
            return None, 0
        with self._lock:
            entry = self._entries.get(doc_id)
            if entry is None:
                return None, 0
            self._entries.move_to_end(doc_id)
        return entry, common_prefix_len(entry.ids, ids)

    def store(self, doc_id: str | None, entry: PrefixEntry) -> None:
        """Keep `entry` for the document, evicting least recently used documents over the cap."""
        if doc_id is None:
            return
        with self._lock:
            self._entries.pop(doc_id, None)
            if entry.nbytes > self.cap_bytes:
                return
            self._entries[doc_id] = entry
            while self.total_bytes() > self.cap_bytes:
                self._entries.popitem(last=False)
                self.evictions += 1

    def forget(self, doc_id: str) -> None:
        with self._lock:
            self._entries.pop(doc_id, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def total_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def documents(self) -> list[str]:
        with self._lock:
            return list(self._entries)
