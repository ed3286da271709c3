"""Epoch-deterministic sampling that survives DataLoader workers and resume.

Workers hold their own copy of the dataset, so calling ``dataset.set_epoch`` in the main
process does not reach them. Instead the sampler (which stays in the main process) yields
``(epoch, index)`` pairs and :class:`EpochIndexed` forwards the epoch with each item. What
sample ``i`` of epoch ``e`` contains is then a pure function of ``(seed, e, i)``, whatever
the number of workers and whether the run was resumed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Dataset, Sampler


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` for every index, in a seeded per-epoch order.

    Args:
        length: Number of items per epoch.
        seed: Base seed; the order of epoch ``e`` depends only on ``(seed, e)``.
        shuffle: Permute the indices each epoch (else 0..length-1).
        rank / world_size: Keep every ``world_size``-th item starting at ``rank``
            (data-parallel training); each process sees ``ceil(length / world_size)``.
    """

    def __init__(
        self, length: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1
    ) -> None:
        if length < 1:
            raise ValueError(f"EpochSampler needs at least one item, got length={length}")
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.length)
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.length)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self._order()
        per_rank = -(-self.length // self.world_size)
        padded = np.resize(order, per_rank * self.world_size)  # wrap around to even out
        for index in padded[self.rank :: self.world_size]:
            yield self.epoch, int(index)

    def __len__(self) -> int:
        return (self.length + self.world_size - 1) // self.world_size


class EpochIndexed(Dataset):
    """Wraps a dataset with ``set_epoch`` so items are addressed by ``(epoch, index)``."""

    def __init__(self, dataset: Dataset) -> None:
        if not hasattr(dataset, "set_epoch"):
            raise TypeError(f"{type(dataset).__name__} has no set_epoch(epoch) method")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]
