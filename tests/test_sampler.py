"""Window sampling with edge padding, the episode split, the normalizer and the torch Dataset."""

import numpy as np
import pytest
import torch

from robolearn.datasets import (
    LinearNormalizer,
    ReplayBuffer,
    SequenceDataset,
    SequenceSampler,
    episode_split,
)


@pytest.fixture
def tiny():
    """Two episodes whose values encode (episode, step): 10*episode + step."""
    ep0 = np.arange(0, 4, dtype=np.float32)  # 0 1 2 3
    ep1 = np.arange(10, 15, dtype=np.float32)  # 10 11 12 13 14
    return {"x": np.concatenate([ep0, ep1])[:, None]}, np.array([4, 9])


def windows(sampler):
    return [sampler[i]["x"][:, 0].tolist() for i in range(len(sampler))]


def test_windows_with_edge_replicate_padding(tiny):
    data, ends = tiny
    # horizon 4, n_obs_steps 2 -> pad_before 1; n_action_steps 2 -> pad_after 1
    s = SequenceSampler(data, ends, sequence_length=4, pad_before=1, pad_after=1)
    assert windows(s) == [
        [0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 3],            # episode 0: starts -1..1
        [10, 10, 11, 12], [10, 11, 12, 13], [11, 12, 13, 14], [12, 13, 14, 14],  # episode 1: -1..2
    ]


def test_no_padding_and_mask_and_first_k(tiny):
    data, ends = tiny
    s = SequenceSampler(data, ends, sequence_length=3, episode_mask=np.array([False, True]),
                        key_first_k={"x": 2})
    assert windows(s) == [[10, 11], [11, 12], [12, 13]]
    # windows never cross episodes, even with padding larger than an episode
    s = SequenceSampler(data, ends, sequence_length=6, pad_before=5, pad_after=5)
    for w in windows(s):
        assert all(v < 10 for v in w) or all(v >= 10 for v in w)
    with pytest.raises(IndexError):
        s[len(s)]


def test_episode_split_is_seeded_and_disjoint():
    train, val = episode_split(20, 0.2, seed=3)
    assert val.sum() == 4 and train.sum() == 16 and not (train & val).any()
    t2, v2 = episode_split(20, 0.2, seed=3)
    np.testing.assert_array_equal(val, v2)
    assert not np.array_equal(val, episode_split(20, 0.2, seed=4)[1])
    assert episode_split(2, 0.01)[1].sum() == 1  # at least one validation episode
    assert episode_split(2, 0.9)[0].sum() == 1  # at least one training episode
    with pytest.raises(ValueError, match="val_ratio"):
        episode_split(5, 1.0)


def test_normalizer_limits_constant_dims_and_json(tmp_path):
    x = np.array([[0.0, 5.0, 1.0], [2.0, 5.0, 3.0], [4.0, 5.0, 2.0]])
    norm = LinearNormalizer.fit({"x": x})
    y = norm.normalize("x", x)
    np.testing.assert_allclose(y.min(0), [-1, 0, -1], atol=1e-6)
    np.testing.assert_allclose(y.max(0), [1, 0, 1], atol=1e-6)
    np.testing.assert_allclose(norm.unnormalize("x", y), x, atol=1e-5)
    t = torch.tensor(x, dtype=torch.float32)
    torch.testing.assert_close(norm.normalize("x", t), torch.tensor(y, dtype=torch.float32))
    norm.save(tmp_path / "n.json")
    again = LinearNormalizer.load(tmp_path / "n.json")
    np.testing.assert_allclose(again.normalize("x", x), y)
    with pytest.raises(KeyError, match="no statistics for `action`"):
        norm.normalize("action", x)
    with pytest.raises(ValueError, match="last dimension 2"):
        norm.normalize("x", x[:, :2])


def test_torch_dataset_windows_and_train_only_normalizer(tmp_path):
    rb = ReplayBuffer.create(tmp_path / "b.zarr")
    for i in range(10):
        n = 6 + i
        rb.add_episode({"state": np.full((n, 3), float(i), np.float32) + np.arange(n)[:, None],
                        "action": np.full((n, 2), float(i), np.float32)})
    ds = SequenceDataset(tmp_path / "b.zarr", ["state"], horizon=4, n_obs_steps=2, n_action_steps=2,
                         val_ratio=0.3, seed=0)
    item = ds[0]
    assert item["obs"]["state"].shape == (2, 3) and item["obs"]["state"].dtype == torch.float32
    assert item["action"].shape == (4, 2)
    val = ds.validation()
    train_eps, val_eps = set(np.flatnonzero(ds.train_mask)), set(np.flatnonzero(ds.val_mask))
    assert len(val_eps) == 3 and not train_eps & val_eps
    assert {int(val[i]["action"][0, 0]) for i in range(len(val))} == val_eps
    assert {int(ds[i]["action"][0, 0]) for i in range(len(ds))} == train_eps
    # per-episode window count: L - horizon + pad_before + pad_after + 1 = L - 1
    assert len(ds) == sum(6 + i - 1 for i in train_eps)
    norm = ds.fit_normalizer()
    assert norm.params["action"]["min"][0] == min(train_eps)
    assert norm.params["action"]["max"][0] == max(train_eps)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)
    batch = next(iter(loader))
    assert batch["obs"]["state"].shape == (8, 2, 3) and batch["action"].shape == (8, 4, 2)
    with pytest.raises(ValueError, match="n_action_steps"):
        SequenceDataset(tmp_path / "b.zarr", ["state"], horizon=4, n_obs_steps=2, n_action_steps=4)
