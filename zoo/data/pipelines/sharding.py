"""Splitting host batches across local devices."""
from __future__ import annotations

import numpy as np

Batch = dict[str, np.ndarray]


def shard_batch(batch: Batch, num_devices: int) -> Batch:
    """(B, ...) -> (num_devices, B / num_devices, ...) for pmap; a clear error if B does not divide."""
    size = next(iter(batch.values())).shape[0]
    if size % num_devices:
        raise ValueError(
            f"batch of {size} examples does not divide by {num_devices} devices; set "
            f"per_device_batch_size so the global batch is a multiple of {num_devices}."
        )
    return {k: v.reshape(num_devices, size // num_devices, *v.shape[1:]) for k, v in batch.items()}
