"""DPPO: log-probabilities, PPO pieces, frozen steps, and learning on a one-step bandit."""

import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from robolearn.datasets import LinearNormalizer
from robolearn.policies import DiffusionPolicy, DiffusionPolicyConfig
from robolearn.policies.features import low_dim_spec
from robolearn.rl.dppo import DPPOActor
from robolearn.rl.dppo_agent import DiffusionAgent, DPPOConfig, with_fine_tuning
from robolearn.rl.ppo import (
    ValueCritic,
    actor_lr_scheduler,
    clip_schedule,
    compute_gae,
    ppo_update,
    value_loss,
)

DPPO_CFG = DPPOConfig(min_sampling_denoising_std=0.1, min_logprob_denoising_std=0.1, randn_clip=3.0, eta=1.0,
                      gamma_denoising=0.99, clip_base=0.001, clip_final=0.01, clip_rate=3.0, bc_coef=0.0)
PPO_CFG = OmegaConf.create({"update_epochs": 4, "minibatch_size": 64, "norm_adv": True, "vf_coef": 0.5,
                            "max_grad_norm": 1.0, "target_kl": 1.0})


def pretrained(sampler="ddpm", steps=20, train_steps=20, seed=0):
    torch.manual_seed(seed)
    config = DiffusionPolicyConfig(obs_features=low_dim_spec({"state": 2}), action_dim=2, horizon=8, n_obs_steps=2,
                                   n_action_steps=4, down_dims=[16, 32], step_embed_dim=16,
                                   num_train_timesteps=train_steps, sampler=sampler, num_inference_steps=steps)
    normalizer = LinearNormalizer.fit({"state": np.array([[0.0, 0.0], [1.0, 1.0]]),
                                       "action": np.array([[-1.0, -1.0], [1.0, 1.0]])})
    return DiffusionPolicy(config, normalizer)


def squaredcos_alphas_cumprod(T: int) -> np.ndarray:
    """The squaredcos_cap_v2 schedule (Nichol & Dhariwal 2021, eq. 17), written independently."""
    f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = np.array([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)])
    return np.cumprod(1 - betas)


def test_ddpm_step_logprob_equals_closed_form_gaussian():
    policy = with_fine_tuning(pretrained(), 10)
    actor = DPPOActor(policy)
    torch.manual_seed(1)
    cond = torch.randn(3, 4)
    x_t, x_prev = torch.randn(3, 8, 2), torch.randn(3, 8, 2) * 0.3
    k = torch.tensor([0, 4, 9])  # fine-tuned step k is global step 10 + k, timestep t = 19 - (10 + k)
    got = actor.log_prob(cond, x_t, x_prev, k).detach().numpy()

    ab = squaredcos_alphas_cumprod(20)
    for b in range(3):
        t = 19 - (10 + int(k[b]))
        a_t, a_prev = ab[t], (ab[t - 1] if t > 0 else 1.0)
        beta = 1 - a_t / a_prev
        with torch.no_grad():
            eps = policy.ft_model(x_t[b:b + 1], torch.tensor([t]), cond[b:b + 1])[0].double().numpy()
        xt = x_t[b].double().numpy()
        x0 = np.clip((xt - np.sqrt(1 - a_t) * eps) / np.sqrt(a_t), -1, 1)
        mean = np.sqrt(a_prev) * beta / (1 - a_t) * x0 + np.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t) * xt
        std = max(math.sqrt((1 - a_prev) / (1 - a_t) * beta), 0.1)
        x = x_prev[b].double().numpy()
        logdens = -0.5 * ((x - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
        expected = logdens[1:5].mean()  # executed rows: n_obs_steps - 1 .. + n_action_steps
        assert got[b] == pytest.approx(expected, abs=1e-5)


def test_ddim_deterministic_chain_is_the_policy_sampler():
    policy = with_fine_tuning(pretrained("ddim", 5, 100), 5)
    actor = DPPOActor(policy)
    obs = {"state": torch.rand(4, 2, 2)}
    chain = actor.sample_chain(policy.encode_obs(obs), deterministic=True, generator=torch.Generator().manual_seed(0))
    sampled = policy.sample(obs, generator=torch.Generator().manual_seed(0))[:, 0]
    torch.testing.assert_close(policy.normalizer.unnormalize("action", chain[:, -1]), sampled, atol=1e-5, rtol=0)


def test_importance_ratio_is_one_before_any_update():
    policy = with_fine_tuning(pretrained(), 10)
    agent = DiffusionAgent(policy, DPPO_CFG)
    cond = policy.encode_obs({"state": torch.rand(16, 2, 2)})
    _, record = agent.act(cond)
    old = agent.old_log_probs(cond, record)  # recorded while acting (batch 16, the fast denoising path)
    mb = torch.randperm(16 * agent.K)[:64]
    new = agent.log_probs(cond[mb // agent.K], {"chain": record["chain"][mb // agent.K]}, mb % agent.K)
    ratio = (new - old[mb // agent.K, mb % agent.K]).exp()
    torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-6, rtol=0)


def test_clip_schedule_ends():
    eps = clip_schedule(np.arange(10), 10, base=0.001, final=0.01, rate=3.0)
    assert eps[0] == pytest.approx(0.001) and eps[-1] == pytest.approx(0.01)
    assert np.all(np.diff(eps) > 0) and np.all(np.diff(eps, 2) > 0)  # rises, exponentially
    assert clip_schedule(0, 1, 0.001, 0.01, 3.0) == pytest.approx(0.01)


def actor_lrs(iterations: int, lr: float, lr_min: float | None, resume_at: int | None = None) -> list[float]:
    """The actor lr each iteration uses; with resume_at, the scheduler is rebuilt there from its JSON state."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = actor_lr_scheduler(opt, iterations, lr_min)
    lrs = []
    for i in range(iterations):
        if i == resume_at:  # as finetune resumes: a new optimizer and scheduler, then their saved JSON states
            groups, state = json.loads(json.dumps([opt.state_dict()["param_groups"], sched.state_dict()]))
            opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
            sched = actor_lr_scheduler(opt, iterations, lr_min)
            opt.load_state_dict({"state": {}, "param_groups": groups})
            sched.load_state_dict(state)
        lrs.append(opt.param_groups[0]["lr"])
        if sched is not None:
            opt.step()
            sched.step()
    return lrs


def test_cosine_actor_lr_ends_midpoint_and_constant_default():
    lrs = actor_lrs(11, 3e-5, 3e-6)
    assert lrs[0] == pytest.approx(3e-5) and lrs[-1] == pytest.approx(3e-6)
    assert lrs[5] == pytest.approx(0.5 * (3e-5 + 3e-6))  # half-way down at the middle iteration
    assert np.all(np.diff(lrs) < 0)
    assert actor_lrs(11, 3e-5, None)[7] == 3e-5
    assert actor_lrs(11, 3e-5, 3e-6, resume_at=4) == pytest.approx(lrs)  # resumed from the JSON state


def test_value_loss_per_env_step_equals_the_per_pair_mean_and_its_gradient():
    torch.manual_seed(0)
    critic = ValueCritic(6, (16, 16))
    cond_all, returns = torch.randn(40, 6), torch.randn(40)
    step_idx = torch.randint(0, 40, (300,))  # repeated env steps, as in a DPPO minibatch
    per_pair = 0.5 * (critic(cond_all[step_idx]) - returns[step_idx]).pow(2).mean()
    expected = torch.autograd.grad(per_pair, list(critic.parameters()))
    loss = value_loss(critic, cond_all, returns, step_idx)
    torch.testing.assert_close(loss, per_pair)
    for got, want in zip(torch.autograd.grad(loss, list(critic.parameters())), expected):
        torch.testing.assert_close(got, want)


def test_gae_hand_computed():
    rewards = np.array([[1.0], [0.0], [2.0]])
    values = np.array([[0.5], [0.4], [0.3]])
    dones = np.array([[0.0], [1.0], [0.0]])
    adv, ret = compute_gae(rewards, values, dones, np.array([0.2]), gamma=0.9, lam=0.8)
    # t=2: 2 + 0.9*0.2 - 0.3 = 1.88; t=1 ends the episode: -0.4; t=0: 1 + 0.9*0.4 - 0.5 + 0.72*(-0.4) = 0.572
    np.testing.assert_allclose(adv[:, 0], [0.572, -0.4, 1.88])
    np.testing.assert_allclose(ret[:, 0], [1.072, 0.0, 2.18])


def bandit_reward(chunk: np.ndarray) -> np.ndarray:
    """One-step bandit: the best chunk is every action at (0.5, -0.5)."""
    return -np.square(chunk - np.array([0.5, -0.5])).mean(axis=(1, 2))


def test_dppo_raises_the_bandit_return_and_keeps_early_steps_frozen():
    policy = with_fine_tuning(pretrained(seed=3), 10)
    frozen = {k: v.clone() for k, v in policy.model.state_dict().items()}
    tuned_before = {k: v.clone() for k, v in policy.ft_model.state_dict().items()}
    cfg = DPPOConfig.from_dict({**DPPO_CFG.to_dict(), "clip_base": 0.1, "clip_final": 0.2})
    agent = DiffusionAgent(policy, cfg)
    critic = ValueCritic(4, (32,))
    actor_opt = torch.optim.Adam(agent.params, lr=3e-3)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    cond = policy.encode_obs({"state": torch.full((64, 2, 2), 0.5)})

    def mean_return():
        chunk, _ = agent.act(cond)
        return float(bandit_reward(chunk).mean())

    torch.manual_seed(0)
    before = np.mean([mean_return() for _ in range(3)])
    for _ in range(15):
        chunk, record = agent.act(cond)
        reward = bandit_reward(chunk)
        ppo_update(agent, critic, actor_opt, critic_opt, cond, record, reward - reward.mean(), reward, PPO_CFG, rng)
    after = np.mean([mean_return() for _ in range(3)])
    assert after > before + 0.5 * abs(before), (before, after)

    for key, value in policy.model.state_dict().items():
        assert torch.equal(value, frozen[key]), f"frozen denoiser changed: {key}"
    assert any(not torch.equal(v, tuned_before[k]) for k, v in policy.ft_model.state_dict().items())


def test_ft_steps_out_of_range_is_a_clear_error():
    from robolearn.errors import UserError

    with pytest.raises(UserError, match=r"ft_denoising_steps must be in \[1, 20\]"):
        with_fine_tuning(pretrained(), 21)


def test_ft_steps_none_fine_tunes_every_denoising_step():
    base = pretrained("ddim", 5, 100)
    policy = with_fine_tuning(base, None)
    assert policy.config.ft_denoising_steps == 5
    assert all(policy.denoiser(i, 5) is policy.ft_model for i in range(5))
    assert DPPOActor(policy).K_ft == 5


def test_finetuned_checkpoint_keeps_raw_and_averaged_denoisers(tmp_path):
    from robolearn.policies.checkpoint import CheckpointError, load_policy, save_policy
    from robolearn.policies.ema import EMA

    policy = with_fine_tuning(pretrained(), 5)
    ema = EMA(policy, power=0.75, max_decay=0.99)
    ema.update(policy)  # first update copies the online weights
    with torch.no_grad():
        for p in policy.ft_model.parameters():
            p.add_(0.1)
    ema.update(policy)  # decay 1 - 2^-0.75: the average is between the old and the new weights
    save_policy(tmp_path / "ft", policy, ema.averaged)
    raw, averaged = load_policy(tmp_path / "ft", use_ema=False), load_policy(tmp_path / "ft")
    for name, p in policy.ft_model.state_dict().items():
        assert torch.equal(raw.ft_model.state_dict()[name], p)
        assert torch.equal(averaged.ft_model.state_dict()[name], ema.averaged.ft_model.state_dict()[name])
    weight = next(n for n, p in policy.ft_model.named_parameters() if p.dim() > 1)
    gap = averaged.ft_model.state_dict()[weight] - (policy.ft_model.state_dict()[weight] - 0.1)
    torch.testing.assert_close(gap, torch.full_like(gap, 0.1 * 2 ** -0.75))
    for name, p in policy.model.state_dict().items():  # the frozen pretrained denoiser is the same in both
        assert torch.equal(averaged.model.state_dict()[name], p)
    (tmp_path / "ft" / "ft_ema.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no ft_ema.safetensors"):
        load_policy(tmp_path / "ft")
