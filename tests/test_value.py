"""Offline Q-functions (Cal-QL, IQL), reward labels, chunk transitions and value-guided re-ranking."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from test_diffusion_policy import tiny_policy

from robolearn.datasets import LinearNormalizer, ReplayBuffer
from robolearn.datasets.rewards import episode_success, label_rewards
from robolearn.policies.features import ObsEncoder, ObsFeature, low_dim_spec
from robolearn.value import (
    ChunkTransitions,
    OfflineQConfig,
    OfflineQLearner,
    QFunction,
    QFunctionConfig,
    ValueGuidedPolicy,
    load_q_function,
    monte_carlo_returns,
    save_q_function,
    select_candidates,
)


def test_reward_conventions():
    ends = np.array([3, 7])  # episode 0: steps 0-2 (success), episode 1: steps 3-6 (failure)
    success = np.array([True, False])
    r, term = label_rewards(ends, success, "sparse")
    np.testing.assert_array_equal(r, [0, 0, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(term, [0, 0, 1, 0, 0, 0, 0])
    r, term = label_rewards(ends, success, "vgps", num_final_steps=2)
    np.testing.assert_array_equal(r, [-1, 0, 0, -1, -1, -1, -1])
    np.testing.assert_array_equal(term, [0, 1, 1, 0, 0, 0, 0])
    stored = np.array([0, 0, 1, 0, 0, 0, 0.5], dtype=np.float32)
    r, term = label_rewards(ends, success, "dataset", stored_reward=stored)
    np.testing.assert_array_equal(r, stored)
    np.testing.assert_array_equal(term, [0, 0, 1, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="reward convention must be one of"):
        label_rewards(ends, success, "dense")
    with pytest.raises(Exception, match="needs a `reward` key"):
        label_rewards(ends, success, "dataset")


def write_buffer(path, episodes):
    buffer = ReplayBuffer.create(path)
    for ep in episodes:
        buffer.add_episode(ep)
    return ReplayBuffer.open(path)


def test_episode_success_without_a_success_key_counts_demos_as_successes(tmp_path):
    ep = {"state": np.zeros((4, 1), np.float32), "action": np.zeros((4, 1), np.float32)}
    buffer = write_buffer(tmp_path / "d.zarr", [ep, ep, ep])
    np.testing.assert_array_equal(episode_success(buffer), [True, True, True])
    np.testing.assert_array_equal(episode_success(buffer, failed_episodes=[1]), [True, False, True])
    with pytest.raises(Exception, match="episode 5 does not exist"):
        episode_success(buffer, failed_episodes=[5])


def test_chunk_transitions_sum_rewards_stop_at_terminals_and_pad(tmp_path):
    # one successful episode of 5 steps (obs = step index, action = 10 * step index), one failure of 3 steps
    eps = [{"state": np.arange(5, dtype=np.float32)[:, None], "action": 10 * np.arange(5, dtype=np.float32)[:, None],
            "success": np.array([0, 0, 0, 0, 1], bool)},
           {"state": np.arange(3, dtype=np.float32)[:, None], "action": np.zeros((3, 1), np.float32),
            "success": np.zeros(3, bool)}]
    buffer = write_buffer(tmp_path / "d.zarr", eps)
    gamma = 0.5
    data = ChunkTransitions(buffer, ["state"], n_obs_steps=2, n_action_steps=2, gamma=gamma,
                            reward_convention="vgps", num_final_steps=1)
    # vgps rewards: ep0 [-1,-1,-1,-1,0] (last step terminal), ep1 [-1,-1,-1]
    # chunks running past the cut-off end of ep1 close with the tail value -1 / (1 - gamma) = -2
    np.testing.assert_allclose(data.reward.numpy(), [-1.5, -1.5, -1.5, -1, 0, -1.5, -2, -2])
    np.testing.assert_array_equal(data.done.numpy(), [0, 0, 0, 1, 1, 0, 1, 1])
    def state(x):
        return data.normalizer.normalize("state", np.array(x, np.float32)[:, None]).ravel()

    def action(x):
        return data.normalizer.normalize("action", np.array(x, np.float32)[:, None]).ravel()

    encoder = ObsEncoder({"state": ObsFeature((1,))}, data.normalizer, n_obs_steps=2)
    batch = data.batch(torch.arange(len(data)), torch.device("cpu"), encoder)
    np.testing.assert_allclose(batch["cond"][0].numpy(), state([0, 0]))  # history edge-padded at the start
    np.testing.assert_allclose(batch["next_cond"][0].numpy(), state([1, 2]))  # t + Ta = 2
    np.testing.assert_allclose(batch["next_cond"][4].numpy(), state([3, 4]))  # clamped to the last step
    np.testing.assert_allclose(data.chunk[4].numpy(), action([40, 40]))  # chunk edge-padded at the end
    np.testing.assert_allclose(data.next_chunk[0].numpy(), action([20, 30]))
    assert data.discount[0] == pytest.approx(gamma ** 2)
    # MC returns: ep0 terminal at the end; ep1 cut off, continued with r_last / (1 - gamma) = -2
    np.testing.assert_allclose(data.mc_return.numpy(), [-1.875, -1.75, -1.5, -1, 0, -2, -2, -2])


def test_monte_carlo_returns_sparse():
    g = monte_carlo_returns(np.array([0, 0, 1, 0, 0], np.float32), np.array([0, 0, 1, 0, 0], bool),
                            np.array([3, 5]), 0.9)
    np.testing.assert_allclose(g, [0.81, 0.9, 1.0, 0.0, 0.0], rtol=1e-6)


def bandit_dataset(path, n_episodes=240, seed=0):
    """One-step episodes: state s ~ U(-1, 1)^2, action from {-0.8, 0, 0.8}^2 (each coordinate);
    success iff the action's first coordinate has the sign of s[0] and magnitude 0.8 (best action:
    (0.8 * sign(s0), anything)); a failed episode is cut off (not terminal)."""
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer.create(path)
    for _ in range(n_episodes):
        s = rng.uniform(-1, 1, 2).astype(np.float32)
        a = rng.choice([-0.8, 0.0, 0.8], size=2).astype(np.float32)
        ok = bool(np.sign(a[0]) == np.sign(s[0]) and abs(a[0]) == np.float32(0.8))
        buffer.add_episode({"state": s[None], "action": a[None], "success": np.array([ok])})
    return ReplayBuffer.open(path)


def fit_q(data, algorithm="cal_ql", steps=400, seed=0, **learner_kw):
    torch.manual_seed(seed)
    config = QFunctionConfig(obs_features=low_dim_spec({"state": data.obs_shapes["state"][0]}),
                             action_dim=data.action_dim, n_obs_steps=1,
                             n_action_steps=1, hidden=[64, 64], algorithm=algorithm)
    q = QFunction(config, data.normalizer)
    learner = OfflineQLearner(q, OfflineQConfig(algorithm=algorithm, lr=3e-3, **learner_kw))
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        learner.update(data.batch(torch.randint(0, len(data), (128,), generator=g), torch.device("cpu"), q.encode_obs), g)
    return q.eval()


@pytest.mark.parametrize("algorithm", ["cal_ql", "iql"])
def test_offline_q_ranks_the_known_best_action_first(tmp_path, algorithm):
    data = ChunkTransitions(bandit_dataset(tmp_path / "b.zarr"), ["state"], 1, 1, gamma=0.9,
                            reward_convention="sparse")
    q = fit_q(data, algorithm, cql_alpha=1.0)  # a mild conservative weight for 240 transitions
    rng = np.random.default_rng(1)
    states = rng.uniform(-1, 1, (50, 2)).astype(np.float32)
    states[:, 0] = np.where(np.abs(states[:, 0]) < 0.1, 0.5, states[:, 0])  # keep away from the boundary
    candidates = np.array([[a0, a1] for a0 in (-0.8, 0.0, 0.8) for a1 in (-0.8, 0.0, 0.8)], np.float32)  # (9, 2)
    chunks = torch.from_numpy(np.broadcast_to(candidates[None, :, None], (50, 9, 1, 2)).copy())
    scores = q.score({"state": torch.from_numpy(states)[:, None]}, chunks)  # (50, 9)
    best = candidates[scores.argmax(dim=1).numpy()]
    np.testing.assert_array_equal(best[:, 0], 0.8 * np.sign(states[:, 0]))


def test_calql_conservative_term_lowers_q_of_out_of_distribution_actions(tmp_path):
    data = ChunkTransitions(bandit_dataset(tmp_path / "b.zarr"), ["state"], 1, 1, gamma=0.9,
                            reward_convention="sparse")

    def ood_minus_data(q):
        b = data.batch(torch.arange(len(data)), torch.device("cpu"), q.encode_obs)
        g = torch.Generator().manual_seed(3)
        ood = torch.rand((len(data), 2), generator=g) * 2 - 1  # uniform in the normalized box
        with torch.no_grad():
            return float(q(b["cond"], ood).mean() - q(b["cond"], b["chunk"]).mean())

    plain = ood_minus_data(fit_q(data, cql_alpha=0.0))
    conservative = ood_minus_data(fit_q(data, cql_alpha=5.0))
    assert conservative < plain - 0.1, (conservative, plain)


class HandWrittenQ:
    """Q(obs, chunk) = -|chunk - obs target| summed: the candidate equal to the target scores highest."""

    def check_matches(self, policy):
        pass

    def score(self, obs, chunks):
        target = obs["state"][:, -1, :1]  # (B, 1)
        return -(chunks - target[:, None, None]).abs().sum(dim=(2, 3))


class FixedCandidates:
    """A 'policy' whose K samples are the values 0, 1, ..., K-1 (each a constant chunk)."""

    obs_features, n_obs_steps, n_action_steps = {"state": ObsFeature((1,))}, 1, 2
    config = type("Config", (), {"action_dim": 1})()
    device = torch.device("cpu")

    def sample_chunks(self, obs, k, generator=None):
        b = obs["state"].shape[0]
        return torch.arange(k, dtype=torch.float32)[None, :, None, None].expand(b, k, 2, 1).clone()


def test_reranking_picks_the_candidate_the_q_function_prefers():
    obs = {"state": torch.tensor([[[3.0]], [[7.0]], [[0.0]]])}
    wrapped = ValueGuidedPolicy(FixedCandidates(), HandWrittenQ(), k=10)
    np.testing.assert_array_equal(wrapped.predict_action(obs)[:, 0, 0].numpy(), [3, 7, 0])
    random = ValueGuidedPolicy(FixedCandidates(), HandWrittenQ(), k=10, selection="random")
    picks = random.predict_action({"state": torch.zeros(400, 1, 1)}, generator=torch.Generator().manual_seed(0))
    assert len(set(picks[:, 0, 0].tolist())) == 10  # uniform over the candidates, not the argmax


def test_softmax_selection_tends_to_argmax_as_temperature_goes_to_zero():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(200, 16, generator=g)
    np.testing.assert_array_equal(select_candidates(scores, 1e-6, g), scores.argmax(dim=1))
    hot = select_candidates(scores, 100.0, g)
    assert (hot != scores.argmax(dim=1)).float().mean() > 0.5  # a high temperature is nearly uniform
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        select_candidates(scores, -1.0)


def tiny_q(policy, **overrides):
    config = dict(obs_features=low_dim_spec({"state": 3}), action_dim=2, n_obs_steps=2, n_action_steps=4, hidden=[16])
    config.update(overrides)
    c = QFunctionConfig(**config)
    rng = np.random.default_rng(0)
    normalizer = LinearNormalizer.fit({**{k: rng.uniform(-1, 1, (50, f.size)) for k, f in c.features.items()},
                                       "action": rng.uniform(-2, 2, (50, c.action_dim))})
    return QFunction(c, normalizer)


def test_reranking_a_diffusion_policy_with_a_q_function(tmp_path):
    policy = tiny_policy().eval()
    q = tiny_q(policy).eval()
    wrapped = ValueGuidedPolicy(policy, q, k=8)
    obs = {"state": torch.rand(3, 2, 3)}
    action = wrapped.predict_action(obs, generator=torch.Generator().manual_seed(0))
    assert action.shape == (3, 4, 2)
    candidates = policy.sample_chunks(obs, 8, generator=torch.Generator().manual_seed(0))
    best = q.score(obs, candidates).argmax(dim=1)
    torch.testing.assert_close(action, candidates[torch.arange(3), best])  # same samples, the best of them


@pytest.mark.parametrize("override, message", [
    ({"obs_features": low_dim_spec({"state": 4})},
     r"observation `state`: the Q-function expects low_dim \[4\], the policy's is low_dim \[3\]"),
    ({"obs_features": low_dim_spec({"cube_pos": 3})}, "needs observation `cube_pos`, which the policy does not use"),
    ({"action_dim": 3}, "action_dim: the Q-function expects 3, the policy's is 2"),
    ({"n_action_steps": 8}, "n_action_steps: the Q-function scores chunks of 8 actions, the policy executes 4"),
    ({"n_obs_steps": 3}, "n_obs_steps: the Q-function needs 3 observations, the policy keeps 2"),
])
def test_mismatched_q_function_is_a_clear_error(override, message):
    policy = tiny_policy()
    with pytest.raises(ValueError, match=message):
        ValueGuidedPolicy(policy, tiny_q(policy, **override), k=4)


LOADER = textwrap.dedent("""
    import json, pickle, sys
    import torch
    from robolearn.value import load_q_function

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    pickle.load = pickle.loads = torch.load = refuse  # any unpickling while loading fails the test
    q = load_q_function(sys.argv[1])
    obs = {"state": torch.tensor(json.loads(sys.argv[2]))}
    chunks = torch.tensor(json.loads(sys.argv[3]))
    print(json.dumps(q.score(obs, chunks).tolist()))
""")


@pytest.mark.parametrize("algorithm", ["cal_ql", "iql"])
def test_q_checkpoint_round_trip_in_a_fresh_process_without_pickle(tmp_path, algorithm):
    q = tiny_q(tiny_policy(), algorithm=algorithm, n_critics=3).eval()
    save_q_function(tmp_path / "q", q)
    names = sorted(p.name for p in (tmp_path / "q").iterdir())
    assert names == sorted(["config.yaml", "normalizer.json", "model.safetensors"]
                           + (["value.safetensors"] if algorithm == "iql" else []))
    obs = {"state": torch.rand(2, 2, 3)}
    chunks = torch.randn(2, 5, 4, 2)
    proc = subprocess.run([sys.executable, "-c", LOADER, str(tmp_path / "q"), json.dumps(obs["state"].tolist()),
                           json.dumps(chunks.tolist())], capture_output=True, text=True, timeout=120,
                          env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.array(json.loads(proc.stdout)), q.score(obs, chunks).numpy(), rtol=1e-6)
    loaded = load_q_function(tmp_path / "q")
    if algorithm == "iql":
        torch.testing.assert_close(loaded.value(torch.ones(1, 6)), q.value(torch.ones(1, 6)))


def test_loading_a_policy_checkpoint_as_a_q_function_is_a_clear_error(tmp_path):
    from robolearn.policies.checkpoint import CheckpointError, save_policy
    save_policy(tmp_path / "p", tiny_policy())
    with pytest.raises(CheckpointError, match="is not a Q-function checkpoint"):
        load_q_function(tmp_path / "p")
