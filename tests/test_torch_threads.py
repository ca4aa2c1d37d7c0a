"""env.torch_threads: the one way the library sets torch's CPU thread count for a block."""

from __future__ import annotations

import pytest
import torch

from cotlib import env


def test_sets_then_restores_even_when_the_block_raises():
    before = torch.get_num_threads()
    other = before + 1  # differs from the count before, whatever the machine's setting
    with pytest.raises(RuntimeError, match="boom"), env.torch_threads(other):
        assert torch.get_num_threads() == other
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_none_keeps_the_count_and_a_change_inside_is_undone():
    before = torch.get_num_threads()
    with env.torch_threads(None):
        assert torch.get_num_threads() == before
        torch.set_num_threads(before + 1)
    assert torch.get_num_threads() == before
