"""The 1-D temporal U-Net: shapes, conditioning, and the horizon check."""

import pytest
import torch

from robolearn.policies import ConditionalUnet1D


@pytest.mark.parametrize("down_dims,horizon", [([16, 32], 8), ([16, 32, 64], 16), ([32, 64, 128], 12)])
def test_output_shape_matches_input(down_dims, horizon):
    net = ConditionalUnet1D(action_dim=6, cond_dim=28, horizon=horizon, down_dims=down_dims, n_groups=8,
                            step_embed_dim=16)
    x = torch.randn(4, horizon, 6)
    out = net(x, torch.tensor([0, 10, 50, 99]), torch.randn(4, 28))
    assert out.shape == (4, horizon, 6)
    assert net(x, 5, torch.randn(4, 28)).shape == (4, horizon, 6)  # scalar timestep broadcasts


def test_film_conditioning_changes_the_output():
    torch.manual_seed(0)
    net = ConditionalUnet1D(2, 4, 8, down_dims=[16, 32], step_embed_dim=16)
    x = torch.randn(1, 8, 2)
    a = net(x, 3, torch.zeros(1, 4))
    assert not torch.allclose(a, net(x, 3, torch.ones(1, 4)))  # observation
    assert not torch.allclose(a, net(x, 60, torch.zeros(1, 4)))  # diffusion step


def test_horizon_that_cannot_be_downsampled_is_a_clear_error():
    with pytest.raises(ValueError, match=r"horizon 10 cannot be down-sampled.*divisible by 4"):
        ConditionalUnet1D(2, 4, horizon=10, down_dims=[16, 32, 64])


def test_bad_groups_and_kernel():
    with pytest.raises(ValueError, match="n_groups=8 must divide"):
        ConditionalUnet1D(2, 4, 8, down_dims=[12, 24])
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        ConditionalUnet1D(2, 4, 8, down_dims=[16, 32], kernel_size=4)
