"""Sequence packing: whole documents packed into rows of T tokens, told apart by segment ids.

Each document (one text of the split, tokenized on its own) is cut into pieces of at most T
tokens; pieces are placed into rows by best fit (each piece, in document order, goes into the
fullest row it still fits, the lowest-numbered of those; deterministic), and each row holds its
pieces one after another. Row items:

    {"inputs":       (T,) int32    the pieces' tokens, then 0,
     "targets":      (T,) int32    each token's successor within its document (0 where none),
     "weights":      (T,) float32  1 where a target exists (0 on a document's last token and on
                                   padding),
     "segment_ids":  (T,) int32    1, 2, ... per piece of the row, 0 on padding,
     "position_ids": (T,) int32    0, 1, ... restarting at each piece (padding continues from
                                   its own start)}

Every token of every document is an input exactly once, and every token but a document's first
is a target exactly once: the last token of a piece predicts the first token of the document's
next piece (targets never cross documents). The model keeps attention inside a segment, so a
packed row computes what its pieces would compute each in a row of its own.
"""
from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.data.pipelines.batch_stream import Batch


def document_tokens(texts: Sequence[str], tokenizer: Any) -> list[np.ndarray]:
    """Each text tokenized on its own -> (n_i,) int32 arrays (empty texts give empty arrays)."""
    return [np.asarray(tokenizer.encode(text), np.int32) for text in texts]


def best_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Item indices per row: item i (length <= capacity) goes into the row with the least room
    left that still holds it (the lowest-numbered such row), else a new row. Items keep their
    order within a row."""
    rooms: dict[int, list[int]] = {}  # room left -> heap of row numbers with that room
    open_rooms: list[int] = []  # sorted rooms that some row has
    rows: list[list[int]] = []
    for item, length in enumerate(lengths):
        if not 0 < length <= capacity:
            raise ValueError(f"item {item} has length {length}; packing needs 1..{capacity}.")
        at = bisect.bisect_left(open_rooms, length)
        if at < len(open_rooms):
            room = open_rooms[at]
            row = heapq.heappop(rooms[room])
            if not rooms[room]:
                del rooms[room]
                open_rooms.pop(at)
        else:
            room, row = capacity, len(rows)
            rows.append([])
        rows[row].append(item)
        left = room - length
        if left:
            if left not in rooms:
                rooms[left] = []
                bisect.insort(open_rooms, left)
            heapq.heappush(rooms[left], row)
    return rows


class PackedLMRows:
    """Random access: row i -> the item above ("inputs", "targets", "weights", "segment_ids",
    "position_ids", each (T,)), from `documents` ((n_i,) int32 token arrays) and T = seq_len."""

    def __init__(self, documents: Sequence[np.ndarray], seq_len: int):
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1; got {seq_len}.")
        lengths = np.array([len(d) for d in documents], np.int64)
        self.tokens = (np.concatenate([np.asarray(d, np.int32) for d in documents])
                       if len(documents) else np.zeros(0, np.int32))
        doc_start = np.concatenate([[0], np.cumsum(lengths)])
        starts, ends, doc_ends = [], [], []
        for doc, length in enumerate(lengths):
            for lo in range(0, int(length), seq_len):
                starts.append(doc_start[doc] + lo)
                ends.append(doc_start[doc] + min(lo + seq_len, int(length)))
                doc_ends.append(doc_start[doc + 1])
        if not starts:
            raise ValueError("no tokens to pack: every document is empty.")
        # Piece p: tokens [start, end) of the flat array; its targets run to the document's end.
        self.piece_start = np.asarray(starts, np.int64)
        self.piece_end = np.asarray(ends, np.int64)
        self.piece_doc_end = np.asarray(doc_ends, np.int64)
        rows = best_fit((self.piece_end - self.piece_start).tolist(), seq_len)
        self.row_pieces = [np.asarray(r, np.int64) for r in rows]
        self.seq_len = seq_len
        self.num_documents = int(np.count_nonzero(lengths))

    def __len__(self) -> int:
        return len(self.row_pieces)

    def __getitem__(self, i: int) -> Batch:
        pieces = self.row_pieces[int(i)]
        item = {key: np.zeros(self.seq_len, np.int32)
                for key in ("inputs", "targets", "segment_ids", "position_ids")}
        item["weights"] = np.zeros(self.seq_len, np.float32)
        at = 0
        for segment, p in enumerate(pieces, start=1):
            start, end, doc_end = self.piece_start[p], self.piece_end[p], self.piece_doc_end[p]
            n = int(end - start)
            targets = self.tokens[start + 1:min(end + 1, doc_end)]  # n, or n - 1 at the end
            item["inputs"][at:at + n] = self.tokens[start:end]
            item["targets"][at:at + len(targets)] = targets
            item["weights"][at:at + len(targets)] = 1.0
            item["segment_ids"][at:at + n] = segment
            item["position_ids"][at:at + n] = np.arange(n)
            at += n
        item["position_ids"][at:] = np.arange(self.seq_len - at)
        return item

    def fill(self) -> float:
        """Share of the rows' positions that hold tokens."""
        return float(np.sum(self.piece_end - self.piece_start)) / (len(self) * self.seq_len)


OPEN_ROWS = 64  # pair packing: the most recent rows with room that a new pair may join


def first_fit_pairs(source_lengths: Sequence[int], target_lengths: Sequence[int],
                    capacity: int, open_rows: int = OPEN_ROWS) -> list[list[int]]:
    """Pair indices per row: pair i goes into the first (oldest) of the last `open_rows` rows
    with room for both its source and its target, else a new row; deterministic."""
    rows: list[list[int]] = []
    open_ids: list[int] = []  # rows still open, oldest first
    rooms = np.zeros((0, 2), np.int64)  # (len(open_ids), 2): source and target room left
    for item, need in enumerate(zip(source_lengths, target_lengths)):
        if not (0 < need[0] <= capacity and 0 < need[1] <= capacity):
            raise ValueError(f"pair {item} has lengths {need}; packing needs 1..{capacity}.")
        fits = np.flatnonzero((rooms[:, 0] >= need[0]) & (rooms[:, 1] >= need[1]))
        if len(fits):
            at = int(fits[0])
        else:
            rows.append([])
            open_ids.append(len(rows) - 1)
            rooms = np.concatenate([rooms, [[capacity, capacity]]])
            at = len(open_ids) - 1
        rows[open_ids[at]].append(item)
        rooms[at] -= need
        keep = np.flatnonzero((rooms > 0).all(axis=1))[-open_rows:]  # the newest with room
        open_ids = [open_ids[k] for k in keep]
        rooms = rooms[keep]
    return rows


class PackedPairRows:
    """Random access: row i -> several (source, target) pairs packed side by side:

        {"inputs": (S,), "targets": (T,) int32 (each target ends in EOS), "weights": (T,)
         float32 (1 on real target positions), "inputs_segment_ids", "inputs_position_ids": (S,),
         "targets_segment_ids", "targets_position_ids": (T,) int32}

    Pair k of a row has segment k on both sides (0 = padding); positions restart at 0 for each.
    `sources` / `targets`: each pair's id arrays (targets with their EOS), S = T = seq_len.
    """

    def __init__(self, sources: Sequence[np.ndarray], targets: Sequence[np.ndarray],
                 seq_len: int):
        self.sources, self.targets, self.seq_len = sources, targets, seq_len
        rows = first_fit_pairs([len(s) for s in sources], [len(t) for t in targets], seq_len)
        self.row_pairs = [np.asarray(r, np.int64) for r in rows]

    def __len__(self) -> int:
        return len(self.row_pairs)

    def _side(self, arrays: Sequence[np.ndarray], pairs: np.ndarray) -> dict[str, np.ndarray]:
        ids, segments = (np.zeros(self.seq_len, np.int32) for _ in range(2))
        positions = np.zeros(self.seq_len, np.int32)
        at = 0
        for segment, p in enumerate(pairs, start=1):
            values = arrays[p]
            n = len(values)
            ids[at:at + n], segments[at:at + n] = values, segment
            positions[at:at + n] = np.arange(n)
            at += n
        positions[at:] = np.arange(self.seq_len - at)
        return {"": ids, "_segment_ids": segments, "_position_ids": positions}

    def __getitem__(self, i: int) -> Batch:
        pairs = self.row_pairs[int(i)]
        item = {}
        for side, arrays in (("inputs", self.sources), ("targets", self.targets)):
            item.update({side + key: value for key, value in self._side(arrays, pairs).items()})
        item["weights"] = (item["targets_segment_ids"] > 0).astype(np.float32)
        return item
