"""Diffusion Policy: learns a multimodal distribution, sampling interface, checkpoints without pickle."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from robolearn.datasets import LinearNormalizer, ReplayBuffer, SequenceDataset
from robolearn.policies import DiffusionPolicy, DiffusionPolicyConfig
from robolearn.policies.checkpoint import CheckpointError, load_policy, save_policy
from robolearn.policies.features import ObsFeature, low_dim_spec
from robolearn.policies.runner import PolicyRunner


def tiny_policy(obs_dim=3, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4, seed=0, **kw):
    torch.manual_seed(seed)
    config = DiffusionPolicyConfig(obs_features=low_dim_spec({"state": obs_dim}), action_dim=action_dim, horizon=horizon,
                                   n_obs_steps=n_obs_steps, n_action_steps=n_action_steps, down_dims=[16, 32],
                                   step_embed_dim=16, **kw)
    normalizer = LinearNormalizer.fit({"state": np.random.default_rng(0).uniform(-1, 1, (50, obs_dim)),
                                       "action": np.random.default_rng(1).uniform(-2, 2, (50, action_dim))})
    return DiffusionPolicy(config, normalizer)


def obs_batch(batch=3, n_obs_steps=2, obs_dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"state": torch.rand(batch, n_obs_steps, obs_dim, generator=g)}


def test_bimodal_actions_land_on_the_modes_not_between():
    """Each demonstration moves to +0.8 or to -0.8 from the same observation: a mean-seeking
    regressor would answer 0; the diffusion policy must answer one of the two modes."""
    torch.manual_seed(0)
    config = DiffusionPolicyConfig(obs_features=low_dim_spec({"state": 1}), action_dim=1, horizon=4, n_obs_steps=1,
                                   n_action_steps=4, down_dims=[16, 32], step_embed_dim=16, num_inference_steps=10)
    normalizer = LinearNormalizer.fit({"state": np.array([[0.0], [1.0]]), "action": np.array([[-1.0], [1.0]])})
    policy = DiffusionPolicy(config, normalizer)
    opt = torch.optim.AdamW(policy.model.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    for _ in range(500):
        sign = rng.choice([-1.0, 1.0], size=(128, 1, 1))
        action = torch.tensor(np.broadcast_to(sign * 0.8, (128, 4, 1)).copy(), dtype=torch.float32)
        loss = policy.compute_loss({"obs": {"state": torch.full((128, 1, 1), 0.5)}, "action": action})
        opt.zero_grad()
        loss.backward()
        opt.step()
    samples = policy.sample({"state": torch.full((1, 1, 1), 0.5)}, num_samples=200,
                            generator=torch.Generator().manual_seed(0))[0, :, :, 0].numpy()  # (200, 4)
    means = samples.mean(axis=1)
    near_mode = np.abs(np.abs(means) - 0.8) < 0.15
    assert near_mode.mean() > 0.9, f"only {near_mode.mean():.0%} of samples near a mode"
    assert np.mean(np.abs(means) < 0.4) < 0.05  # almost nothing in between
    frac_positive = np.mean(means > 0)
    assert 0.2 < frac_positive < 0.8, f"one mode collapsed: {frac_positive:.0%} positive"


def test_sampling_interface_shapes_and_inference_steps():
    policy = tiny_policy().eval()
    obs = obs_batch()
    assert policy.predict_action(obs).shape == (3, 4, 2)
    assert policy.sample_chunks(obs, k=5).shape == (3, 5, 4, 2)
    assert policy.sample(obs, num_samples=2).shape == (3, 2, 8, 2)
    policy.set_sampler("ddpm", 100)
    assert len(policy.sample_scheduler.timesteps) == 100
    assert policy.predict_action(obs).shape == (3, 4, 2)
    policy.set_sampler("ddim", 3)
    assert len(policy.sample_scheduler.timesteps) == 3
    with pytest.raises(ValueError, match="sampler must be"):
        policy.set_sampler("euler", 3)
    with pytest.raises(ValueError, match=r"num_inference_steps must be in \[1, 100\]"):
        policy.set_sampler("ddim", 0)


def test_executed_chunk_starts_at_the_latest_observation():
    policy = tiny_policy().eval()
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    full = policy.sample(obs_batch(), 1, generator=g())[:, 0]
    chunk = policy.predict_action(obs_batch(), generator=g())
    torch.testing.assert_close(chunk, full[:, 1:5])  # n_obs_steps - 1 = 1


def test_runner_keeps_history_and_queue():
    class Recorder:
        obs_features, n_obs_steps = {"state": ObsFeature((1,))}, 2

        def __init__(self):
            self.calls = []

        def predict_action(self, obs, generator=None):
            self.calls.append(obs["state"].numpy().copy())
            b = obs["state"].shape[0]
            return torch.arange(3, dtype=torch.float32).repeat(b, 1)[:, :, None] + 10 * len(self.calls)

    rec = Recorder()
    runner = PolicyRunner(rec)
    actions = [runner.act({"state": np.array([[float(t)]])})[0, 0] for t in range(5)]
    assert actions == [10, 11, 12, 20, 21]  # a new chunk every n_action_steps = 3 steps
    np.testing.assert_array_equal(rec.calls[0][0, :, 0], [0, 0])  # first history repeats the first obs
    np.testing.assert_array_equal(rec.calls[1][0, :, 0], [2, 3])  # then the last two observations


def test_wrong_observation_shape_is_a_clear_error():
    policy = tiny_policy()
    with pytest.raises(ValueError, match=r"observation `state` must have shape \(B, 2, 3\), got \(3, 2, 4\)"):
        policy.predict_action({"state": torch.zeros(3, 2, 4)})
    with pytest.raises(ValueError, match="lacks key `state`"):
        policy.predict_action({"joint_pos": torch.zeros(3, 2, 3)})


LOADER = textwrap.dedent("""
    import json, pickle, sys
    import torch
    from robolearn.policies.checkpoint import load_policy

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    pickle.load = pickle.loads = torch.load = refuse  # any unpickling while loading fails the test
    policy = load_policy(sys.argv[1])
    obs = {"state": torch.tensor(json.loads(sys.argv[2]))}
    action = policy.predict_action(obs, generator=torch.Generator().manual_seed(7))
    print(json.dumps(action.tolist()))
""")


def test_checkpoint_round_trip_in_a_fresh_process_without_pickle(tmp_path):
    policy = tiny_policy(seed=1)
    ema = tiny_policy(seed=2)
    ema.normalizer = policy.normalizer
    save_policy(tmp_path / "ckpt", policy, ema)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.yaml", "ema.safetensors", "model.safetensors", "normalizer.json"]
    obs = obs_batch(batch=2)
    expected = ema.eval().predict_action(obs, generator=torch.Generator().manual_seed(7))
    proc = subprocess.run([sys.executable, "-c", LOADER, str(tmp_path / "ckpt"), json.dumps(obs["state"].tolist())],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.array(json.loads(proc.stdout)), expected.numpy())


def test_normalizer_travels_inside_the_checkpoint(tmp_path):
    policy = tiny_policy()
    save_policy(tmp_path / "ckpt", policy)
    loaded = load_policy(tmp_path / "ckpt", use_ema=False)
    for key in ("state", "action"):
        for stat in ("scale", "offset", "min", "max"):
            np.testing.assert_array_equal(loaded.normalizer.params[key][stat], policy.normalizer.params[key][stat])


def test_checkpoint_with_missing_files_is_a_clear_error(tmp_path):
    save_policy(tmp_path / "ckpt", tiny_policy())
    (tmp_path / "ckpt" / "normalizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"missing \['normalizer.json'\]"):
        load_policy(tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"):
        load_policy(tmp_path / "nowhere")


def test_dataset_that_does_not_match_the_policy_is_a_clear_error(tmp_path):
    from robolearn.policies.diffusion import check_dataset_matches

    rb = ReplayBuffer.create(tmp_path / "b.zarr")
    for i in range(3):
        rb.add_episode({"state": np.zeros((12, 4), np.float32), "action": np.zeros((12, 2), np.float32)})
    data = SequenceDataset(tmp_path / "b.zarr", ["state"], horizon=8, n_obs_steps=2, n_action_steps=4)
    with pytest.raises(ValueError, match=r"observation `state` has shape \[4\], expected \[3\] \(low_dim\)"):
        check_dataset_matches(tiny_policy(obs_dim=3).config, data)
    with pytest.raises(ValueError, match=r"action has dimension 2, the policy expects 5"):
        check_dataset_matches(tiny_policy(obs_dim=4, action_dim=5).config, data)
    check_dataset_matches(tiny_policy(obs_dim=4, action_dim=2).config, data)  # matches: no error
