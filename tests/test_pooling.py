"""Pooling turns activations of any length into one fixed-size float16 vector per row."""
import pytest
import torch
from acestep_viz.trainer_plugin.pooling import FLOAT16_MAX, pool_any, pool_float32, pool_latent, pool_sequence


def test_sequence_mean_ignores_masked_positions():
    x = torch.randn(2, 5, 4)
    x[0, 3:] = 1000.0  # padding that would dominate an unmasked mean
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    pooled = pool_sequence(x, mask)
    assert pooled.shape == (2, 4) and pooled.dtype == torch.float16
    torch.testing.assert_close(pooled[0].float(), x[0, :3].mean(0), atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(pooled[1].float(), x[1].mean(0), atol=2e-3, rtol=1e-3)


def test_sequence_without_mask_is_plain_mean_and_empty_mask_gives_zeros():
    x = torch.randn(3, 7, 6)
    torch.testing.assert_close(pool_sequence(x).float(), x.mean(1), atol=2e-3, rtol=1e-3)
    assert torch.equal(pool_sequence(x, torch.zeros(3, 7))[1], torch.zeros(6, dtype=torch.float16))


def test_mask_of_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match="does not match"):
        pool_sequence(torch.randn(2, 5, 4), torch.ones(2, 6))


def test_latents_of_different_lengths_pool_to_the_same_dimension():
    short, long = torch.randn(1, 8, 16, 5), torch.randn(1, 8, 16, 40)
    assert pool_latent(short).shape == pool_latent(long).shape == (1, 128)
    torch.testing.assert_close(pool_latent(long).float(), long.mean(-1).flatten(1), atol=2e-3, rtol=1e-3)


def test_pool_any_dispatches_on_rank():
    assert pool_any(torch.randn(3, 10)).shape == (3, 10)
    assert pool_any(torch.randn(10)).shape == (1, 10)
    assert pool_any(torch.randn(3, 9, 10)).shape == (3, 10)
    assert pool_any(torch.randn(3, 8, 16, 9)).shape == (3, 128)


def test_pool_any_scales_and_uses_the_mask():
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    expected = torch.stack([x[0, :2].mean(0), x[1, 0]]) * 2.0
    torch.testing.assert_close(pool_any(x, mask, scale=2.0).float(), expected, atol=4e-3, rtol=1e-3)


def test_bfloat16_input_pools_in_float32():
    x = torch.randn(2, 300, 8) + 100.0  # a long bf16 sum would lose digits
    pooled = pool_any(x.to(torch.bfloat16))
    assert pooled.dtype == torch.float16
    torch.testing.assert_close(pooled.float(), x.to(torch.bfloat16).float().mean(1), atol=0.1, rtol=1e-3)


def test_huge_values_clamp_to_float16_range_instead_of_inf():
    pooled = pool_any(torch.full((1, 4), 1e6))
    assert torch.isfinite(pooled).all() and pooled.max().item() == FLOAT16_MAX


def test_pooling_never_keeps_the_graph():
    x = torch.randn(2, 5, 4, requires_grad=True)
    assert not pool_any(x).requires_grad
    assert not pool_sequence(x, torch.ones(2, 5)).requires_grad
    for rank_x in (x, x[:, 0], x.unsqueeze(1)):  # what a hook runs, with gradients on
        assert not pool_float32(rank_x, scale=2.0).requires_grad
    assert not pool_float32(x, torch.ones(2, 5, requires_grad=True)).requires_grad
