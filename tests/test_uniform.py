"""The CPU uniforms are numpy's PCG64 ``Generator.random`` numbers, bit for bit."""

import numpy as np
import pytest
import torch

from superpose import data
from superpose.data.sampling import _UNIFORM_CHUNK


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [1, 5, 2 * _UNIFORM_CHUNK + 3])
def test_uniform_equals_numpy_generator_random(size: int, dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(7)
    seed = int(torch.randint(2**63 - 1, (), generator=torch.Generator().manual_seed(7)))
    u = data.uniform((size,), generator, dtype)
    numpy_dtype = np.float32 if dtype == torch.float32 else np.float64
    starts = range(0, size, _UNIFORM_CHUNK)
    streams = np.random.SeedSequence(seed).spawn(len(starts))
    expected = np.concatenate(
        [
            np.random.Generator(np.random.PCG64(stream)).random(
                min(_UNIFORM_CHUNK, size - start), dtype=numpy_dtype
            )
            for start, stream in zip(starts, streams, strict=True)
        ]
    )
    assert u.dtype == dtype and u.shape == (size,)
    assert np.array_equal(u.numpy(), expected)
