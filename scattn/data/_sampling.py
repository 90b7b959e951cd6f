"""Minibatches of cells with similar token counts, for token models (less padding)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scvi.dataloaders import AnnDataLoader, DataSplitter
from torch.utils.data import Sampler, default_convert


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of dataset positions whose cells have similar lengths (Hugging Face's
    ``group_by_length``).

    Every epoch the cells are shuffled, cut into mega-batches of ``mega_factor * batch_size``
    cells, each mega-batch is sorted by length and cut into minibatches, and the minibatches
    are shuffled: a minibatch is padded to its longest cell, so grouping removes most padding
    while the order of minibatches stays random.

    Parameters
    ----------
    lengths
        Tokens per cell, in dataset order.
    batch_size
        Cells per minibatch.
    shuffle
        Shuffle (training); `False`: sorted within mega-batches in a fixed order.
    mega_factor
        Minibatches per mega-batch.
    seed
        Seed of the shuffling (the epoch is added, so every epoch differs).
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, *, shuffle: bool = True,
                 mega_factor: int = 50, seed: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.mega = max(1, mega_factor) * batch_size
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.lengths)
        if self.shuffle:
            rng = np.random.default_rng(self.seed + self.epoch)
            self.epoch += 1
            order = rng.permutation(n)
        else:
            rng, order = None, np.arange(n)
        batches = []
        for start in range(0, n, self.mega):
            mega = order[start : start + self.mega]
            mega = mega[np.argsort(-self.lengths[mega], kind="stable")]
            batches += [mega[i : i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        if rng is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for b in batches:
            yield b.tolist()


def _first(batch):
    # the sampler yields whole minibatches: the loader's batch of one is that minibatch
    return default_convert(batch[0])


class LengthGroupedDataSplitter(DataSplitter):
    """scvi-tools' :class:`~scvi.dataloaders.DataSplitter` whose training loader draws
    :class:`LengthGroupedBatchSampler` minibatches (validation and test stay in order).

    Parameters
    ----------
    adata_manager
        The registered data.
    lengths
        Tokens per registered cell.
    batch_size
        Cells per minibatch.
    seed
        Seed of the sampler.
    **kwargs
        Passed to :class:`~scvi.dataloaders.DataSplitter`.
    """

    def __init__(self, adata_manager, *, lengths: np.ndarray, batch_size: int, seed: int = 0,
                 **kwargs) -> None:
        super().__init__(adata_manager, batch_size=batch_size, **kwargs)
        self.lengths = np.asarray(lengths)
        self.group_batch_size = batch_size
        self.seed = seed

    def train_dataloader(self):
        """Length-grouped, shuffled minibatches of the training cells."""
        if self.data_loader_kwargs.get("distributed_sampler"):
            return super().train_dataloader()  # the distributed sampler splits cells across processes
        sampler = LengthGroupedBatchSampler(self.lengths[self.train_idx], self.group_batch_size,
                                            seed=self.seed)
        kwargs = {k: v for k, v in self.data_loader_kwargs.items() if k not in ("batch_size", "distributed_sampler")}
        return AnnDataLoader(self.adata_manager, indices=self.train_idx, sampler=sampler,
                             collate_fn=_first, load_sparse_tensor=self.load_sparse_tensor,
                             pin_memory=self.pin_memory, **kwargs)


def expressed_counts(matrix, columns: np.ndarray, chunk_size: int | None = None) -> np.ndarray:
    """Number of non-zero entries of each row of `matrix` among `columns` (streamed by blocks)."""
    from ._validate import iter_row_blocks

    out = np.zeros(matrix.shape[0], dtype=np.int64)
    for start, stop, block in iter_row_blocks(matrix, chunk_size):
        sub = block[:, columns]
        out[start:stop] = np.asarray((sub != 0).sum(axis=1)).ravel()
    return out


__all__ = ["LengthGroupedBatchSampler", "LengthGroupedDataSplitter", "expressed_counts"]
