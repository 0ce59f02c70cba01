"""Batches of token sequences: a bucketed, resumable training loader and an exact eval loader.

Training follows torchtext's legacy ``BucketIterator`` in the tutorial: each epoch shuffles the
examples, cuts them into pools of ``100 * batch_size``, sorts each pool by length, cuts it into
batches and shuffles the batches, so a batch holds reviews of similar length (little padding)
in a random order. Batches are right-padded with ``<pad>`` to their longest sequence and at
least to ``min_length`` (the widest convolution). A final batch of one sample is merged into the
one before it (SelfNorm's gate normalises over the batch and needs two).

Randomness comes from one ``torch.Generator``. ``state_dict()`` records the generator state at
the start of the current epoch and how many batches were served, so ``load_state_dict()`` +
iteration replays the same epoch order and continues after the last served batch: a resumed
run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

Batch = Tuple[torch.Tensor, torch.Tensor]
"""``(tokens (N, L) int64 right-padded, labels (N,) float32)``."""


def collate(sequences: Sequence[np.ndarray], labels: np.ndarray, pad_idx: int,
            min_length: int) -> Batch:
    """Right-pads ``sequences`` into one ``(N, max(len, min_length))`` int64 tensor."""
    length = max(min_length, max(len(s) for s in sequences))
    tokens = np.full((len(sequences), length), pad_idx, dtype=np.int64)
    for row, seq in enumerate(sequences):
        tokens[row, : len(seq)] = seq
    return torch.from_numpy(tokens), torch.from_numpy(np.asarray(labels, dtype=np.float32))


class BucketLoader:
    """Training batches of similar-length sequences (module docstring).

    Args:
        sequences: token indices of each example (int arrays, none empty).
        labels: ``(N,)`` binary labels.
        batch_size: examples per batch.
        pad_idx: the padding index.
        min_length: minimum padded length (the widest filter).
        seed: seed of the loader's generator.
        pool_factor: batches per sorting pool (torchtext: 100).
    """

    def __init__(self, sequences: Sequence[np.ndarray], labels: np.ndarray, batch_size: int,
                 pad_idx: int, min_length: int = 1, seed: int = 0, pool_factor: int = 100
                 ) -> None:
        if len(sequences) != len(labels):
            raise ValueError(f"{len(sequences)} sequences but {len(labels)} labels")
        if batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for training, got {batch_size}")
        self.sequences = list(sequences)
        self.labels = np.asarray(labels, dtype=np.float32)
        self.lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
        self.batch_size = int(batch_size)
        self.pad_idx = int(pad_idx)
        self.min_length = int(min_length)
        self.pool = int(pool_factor) * self.batch_size
        self.generator = torch.Generator().manual_seed(int(seed))
        self.epoch = 0
        self._epoch_state: Optional[torch.Tensor] = None  # generator state at epoch start
        self._served = 0
        self._resume: Optional[Tuple[torch.Tensor, int]] = None

    def __len__(self) -> int:
        n, b = len(self.sequences), self.batch_size
        full, rest = divmod(n, b)
        return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)

    def plan(self) -> List[np.ndarray]:
        """The batches (index arrays) of one epoch, drawn from the generator."""
        order = torch.randperm(len(self.sequences), generator=self.generator).numpy()
        batches: List[np.ndarray] = []
        for start in range(0, len(order), self.pool):
            pool = order[start: start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            chunk = [pool[i: i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
            shuffle = torch.randperm(len(chunk), generator=self.generator).tolist()
            batches.extend(chunk[i] for i in shuffle)
        small = [i for i, b in enumerate(batches) if len(b) == 1]
        if small and len(batches) > 1:  # at most one: the last batch of the last pool
            i = small[0]
            j = i - 1 if i > 0 else 1
            batches[j] = np.concatenate([batches[j], batches[i]])
            del batches[i]
        return batches

    def __iter__(self) -> Iterator[Batch]:
        if self._resume is not None:
            state, skip = self._resume
            self._resume = None
            self.generator.set_state(state)
        else:
            skip = 0
        self._epoch_state = self.generator.get_state()
        batches = self.plan()
        self._served = skip
        for idx in batches[skip:]:
            self._served += 1
            yield collate([self.sequences[i] for i in idx], self.labels[idx], self.pad_idx,
                          self.min_length)
        self._epoch_state = None
        self._served = 0
        self.epoch += 1

    def state_dict(self) -> dict:
        """Where the loader stands: mid-epoch, the epoch's start state + batches served."""
        if self._resume is not None:
            state, served = self._resume
        elif self._epoch_state is not None:
            state, served = self._epoch_state, self._served
        else:
            state, served = self.generator.get_state(), 0
        return {"generator": state.clone(), "served": int(served), "epoch": int(self.epoch)}

    def load_state_dict(self, state: dict) -> None:
        self._resume = (state["generator"].clone(), int(state["served"]))
        self.epoch = int(state["epoch"])
        self._epoch_state = None
        self._served = 0


class EvalLoader:
    """Deterministic evaluation batches (sorted by length to limit padding; every sample once).

    Args:
        sequences, labels, pad_idx, min_length: as :class:`BucketLoader`.
        batch_size: examples per batch.
    """

    def __init__(self, sequences: Sequence[np.ndarray], labels: np.ndarray, batch_size: int,
                 pad_idx: int, min_length: int = 1) -> None:
        self.sequences = list(sequences)
        self.labels = np.asarray(labels, dtype=np.float32)
        self.batch_size = int(batch_size)
        self.pad_idx = int(pad_idx)
        self.min_length = int(min_length)
        lengths = np.array([len(s) for s in self.sequences], dtype=np.int64)
        self.order = np.argsort(lengths, kind="stable")

    def __len__(self) -> int:
        return -(-len(self.sequences) // self.batch_size)

    @property
    def num_samples(self) -> int:
        return len(self.sequences)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self.order), self.batch_size):
            idx = self.order[start: start + self.batch_size]
            yield collate([self.sequences[i] for i in idx], self.labels[idx], self.pad_idx,
                          self.min_length)
