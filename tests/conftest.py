"""Shared test set-up.

The suite's models are small, where torch's intra-op threads cost more than they save, and
on a busy machine (or beside the Ray workers) extra threads make every small op wait for a
free core: a sweep test measured 4 s with one thread and 76 s with two under load. So the
tests, and any subprocess they start, run torch on one thread.
"""

import os

import pytest
import torch

os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
