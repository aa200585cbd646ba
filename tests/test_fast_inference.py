"""The inference fast path: the fast and compiled sampling loops give the eager loop's actions for the same noise,
for low-dim and image policies, DDIM and DDPM, one or K candidates; the cached view follows weight changes."""

import copy

import numpy as np
import pytest
import torch
from test_diffusion_policy import obs_batch, tiny_policy

from robolearn.datasets import LinearNormalizer
from robolearn.policies import DiffusionPolicy, DiffusionPolicyConfig
from robolearn.policies.fast_unet import PACK_MIN_WEIGHTS, FastUnet1D
from robolearn.policies.unet1d import ConditionalUnet1D
from robolearn.rl.dppo import DPPOActor
from robolearn.rl.dppo_agent import with_fine_tuning

TOL = {"atol": 2e-5, "rtol": 0}


def sampled(policy, mode, obs, k=1, seed=0):
    policy.set_inference(mode)
    return policy.sample(obs, k, generator=torch.Generator().manual_seed(seed))


def test_fast_unet_equals_forward_at_every_step_with_packed_and_plain_weights():
    torch.manual_seed(0)
    unet = ConditionalUnet1D(action_dim=3, cond_dim=10, horizon=8, down_dims=[32, 256], step_embed_dim=16).eval()
    assert max(m.weight.numel() for m in unet.modules() if isinstance(m, torch.nn.Conv1d)) >= PACK_MIN_WEIGHTS
    timesteps = torch.tensor([90, 60, 30, 0])
    for pack in (True, False):
        view = FastUnet1D(unet, timesteps, pack=pack)
        for batch in (1, 5):
            x, cond = torch.randn(batch, 8, 3), torch.randn(batch, 10)
            obs_film = view.obs_film(cond)
            with torch.no_grad():
                for i, t in enumerate(timesteps):
                    torch.testing.assert_close(view(x, view.film(obs_film, i)), unet(x, t, cond), **TOL)


@pytest.mark.parametrize("sampler,steps", [("ddim", 10), ("ddpm", 20)])
def test_fast_sampling_gives_the_eager_actions_for_the_same_noise(sampler, steps):
    policy = tiny_policy(sampler=sampler, num_inference_steps=steps).eval()
    obs = obs_batch(batch=3)
    for k in (1, 4):
        eager = sampled(policy, "eager", obs, k)
        torch.testing.assert_close(sampled(policy, "fast", obs, k), eager, **TOL)
    assert not torch.allclose(sampled(policy, "fast", obs, 4, seed=1), eager)  # other noise, other actions


def test_compiled_sampling_gives_the_eager_actions():
    policy = tiny_policy(num_inference_steps=3).eval()
    obs = obs_batch(batch=2)
    torch.testing.assert_close(sampled(policy, "compiled", obs, 2), sampled(policy, "eager", obs, 2), **TOL)


def test_image_policy_fast_path_encodes_once_and_matches_eager(monkeypatch):
    config = DiffusionPolicyConfig(obs_features={"img": {"shape": [24, 24, 3], "type": "rgb"},
                                                 "state": {"shape": [2], "type": "low_dim"}},
                                   action_dim=2, horizon=8, n_action_steps=4, down_dims=[16, 32], step_embed_dim=16,
                                   image_encoder={"type": "small_cnn", "feature_dim": 8, "crop_ratio": 0.875})
    rng = np.random.default_rng(0)
    normalizer = LinearNormalizer.fit({"state": rng.uniform(-1, 1, (20, 2)), "action": rng.uniform(-1, 1, (20, 2))})
    torch.manual_seed(0)
    policy = DiffusionPolicy(config, normalizer).eval()
    obs = {"img": torch.randint(0, 256, (2, 2, 24, 24, 3), dtype=torch.uint8), "state": torch.rand(2, 2, 2)}
    encoder = policy.obs_encoder.image_encoders["img"]
    calls = []
    monkeypatch.setattr(encoder, "forward", lambda images, f=encoder.forward: calls.append(1) or f(images))
    fast = sampled(policy, "fast", obs, 3)
    assert len(calls) == 1  # one encoding per decision, shared by every denoising step and candidate
    torch.testing.assert_close(fast, sampled(policy, "eager", obs, 3), **TOL)


def test_fast_path_follows_weight_changes():
    policy = tiny_policy().eval()
    obs = obs_batch()
    before = sampled(policy, "fast", obs)
    optimizer = torch.optim.SGD(policy.model.parameters(), lr=0.5)
    policy.train()
    policy.compute_loss({"obs": obs, "action": torch.randn(3, 8, 2)}).backward()
    optimizer.step()  # in place: the cached view must notice
    policy.eval()
    after = sampled(policy, "fast", obs)
    assert not torch.allclose(after, before, atol=1e-4)
    torch.testing.assert_close(after, sampled(policy, "eager", obs), **TOL)
    other = tiny_policy(seed=1).eval()
    policy.load_state_dict(other.state_dict())
    torch.testing.assert_close(sampled(policy, "fast", obs), sampled(other, "eager", obs), **TOL)
    torch.testing.assert_close(sampled(copy.deepcopy(policy), "fast", obs), sampled(other, "eager", obs), **TOL)


def test_dppo_chains_and_log_probs_are_the_same_on_both_paths():
    policy = with_fine_tuning(tiny_policy(sampler="ddpm", num_inference_steps=10), 4).eval()
    actor = DPPOActor(policy, min_sampling_std=0.05)
    cond = policy.encode_obs(obs_batch(batch=6))
    out = {}
    for mode in ("eager", "fast"):
        policy.set_inference(mode)
        out[mode] = actor.sample_chain(cond, generator=torch.Generator().manual_seed(3), return_log_probs=True)
    for fast, eager in zip(out["fast"], out["eager"]):
        torch.testing.assert_close(fast, eager, **TOL)
    assert out["fast"][0].shape == (6, 5, 8, 2) and out["fast"][1].shape == (6, 4)


def test_compiled_dppo_rollouts_follow_updates_without_compiling_again():
    policy = with_fine_tuning(tiny_policy(sampler="ddpm", num_inference_steps=10), 4).eval()
    policy.set_inference("fast")
    compiled = DPPOActor(policy, min_sampling_std=0.05, compile=True)
    cond = policy.encode_obs(obs_batch(batch=6))
    opt = torch.optim.Adam(policy.ft_model.parameters(), lr=1e-2)

    def both():
        reference = copy.deepcopy(policy)
        reference.set_inference("eager")  # the U-Net's forward, with the current weights
        eager = DPPOActor(reference, min_sampling_std=0.05).sample_chain(
            cond, generator=torch.Generator().manual_seed(3), return_log_probs=True)
        fast = compiled.sample_chain(cond, generator=torch.Generator().manual_seed(3), return_log_probs=True)
        for a, b in zip(fast, eager):
            torch.testing.assert_close(a, b, **TOL)
        return fast[0]

    compiled.sample_chain(cond)  # compiles
    cache = policy._fast_views[("ft_model", True)]
    run = cache.compiled()
    first = both()
    opt.zero_grad()
    policy.ft_model(first[:, 0], torch.zeros(6, dtype=torch.long), cond).square().mean().backward()
    opt.step()  # an in-place change of the fine-tuned weights, as PPO's update makes
    assert not torch.allclose(both(), first, atol=1e-4)  # new weights, new chains, equal on both paths
    assert policy._fast_views[("ft_model", True)] is cache and cache.compiled() is run  # not compiled again


def test_unknown_inference_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="inference must be one of"):
        tiny_policy(inference="turbo")
