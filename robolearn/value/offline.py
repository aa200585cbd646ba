"""Offline Q-learning over action chunks: Cal-QL and IQL on a zarr demonstration dataset.

A decision is an action chunk, as for the policies: from step t the chunk a_t..a_{t+Ta-1} is
executed (edge-padded at the episode end), its reward is the discounted sum of the per-step rewards
up to a terminal step, and the next decision is at t + Ta. The backup is in-sample: the next
chunk is the dataset's own (as in IQL; for Cal-QL this evaluates the behaviour policy, which is what
re-ranking the behaviour-cloned policy's own candidates needs; V-GPS's Cal-QL also trains an actor
that deployment never uses).

- Cal-QL (Nakamoto et al. 2023, Alg. 1): the TD loss plus alpha times the CQL(H) regularizer
  (Kumar et al. 2020, eq. 4): logsumexp of Q over out-of-distribution chunks minus Q of the
  dataset chunk. The OOD chunks are uniform in the normalized action box and Gaussian
  perturbations of the dataset chunk; the perturbed ones are calibrated, i.e. their Q is
  floored at the Monte-Carlo return of the dataset trajectory (Cal-QL eq. 5), so conservatism
  never pushes them below the behaviour policy's value.
- IQL (Kostrikov et al. 2021, eqs. 5-6): V(o) by expectile regression on the target-network
  min_i Q_i(o, a), and Q(o, a) regressed onto r + gamma^Ta V(o').
Both keep a Polyak-averaged target copy of the critic ensemble.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from robolearn.datasets.dataset import data_fingerprint, load_arrays
from robolearn.datasets.normalizer import LinearNormalizer
from robolearn.datasets.replay_buffer import DatasetError, ReplayBuffer
from robolearn.datasets.rewards import episode_success, label_rewards
from robolearn.policies.history import history_indices
from robolearn.value.qfunction import QFunction


def monte_carlo_returns(reward: np.ndarray, terminal: np.ndarray, episode_ends: np.ndarray,
                        gamma: float) -> np.ndarray:
    """Discounted return-to-go per step (N,), within each episode, stopping at terminal steps.

    An episode that ends without a terminal step (cut off by a time limit) is continued as if its
    last reward repeated forever (tail value r_last / (1 - gamma)), so a failure labelled -1 per
    step gets the same value as its bootstrapped backup instead of an optimistic partial sum.
    """
    g = np.zeros(len(reward), dtype=np.float64)
    start = 0
    for end in np.asarray(episode_ends, dtype=np.int64):
        running = 0.0 if terminal[end - 1] else float(reward[end - 1]) / (1.0 - gamma)
        for t in range(end - 1, start - 1, -1):
            running = float(reward[t]) + (0.0 if terminal[t] else gamma * running)
            g[t] = running
        start = end
    return g.astype(np.float32)


class ChunkTransitions:
    """Chunk-level transitions of a replay buffer, normalized and held in memory as tensors.

    For every step t (N in all): the observation history ending at t (indices into the raw data, encoded
    per batch by the Q-function's `ObsEncoder`, so an encoder with weights trains too); chunk (N, n_action_steps * Da) the normalized executed chunk; reward (N,) its
    discounted reward sum; done (N,) a terminal step inside the chunk, or a chunk that runs past
    the end of an episode cut off by the time limit (its reward then adds the discounted tail
    value of `monte_carlo_returns`); the next history / next_chunk at t + n_action_steps (clamped to the
    episode's last step); discount (N,) gamma^n_action_steps;
    mc_return (N,) the return-to-go from t (`monte_carlo_returns`). Histories are edge-padded at
    the episode start and chunks at the end, as in `SequenceDataset`.

    Args:
        buffer: a `ReplayBuffer` or a path to one.
        obs_keys, n_obs_steps, n_action_steps: must match the policy whose chunks will be scored.
        gamma: discount per env step.
        reward_convention, num_final_steps, failed_episodes: see `robolearn.datasets.rewards`.
        normalizer: reuse these statistics; default: fitted on the whole dataset.

    Raises:
        FileNotFoundError, DatasetError: the dataset cannot be read, lacks a key, or is empty.
        ValueError: bad window sizes or gamma outside (0, 1).
    """

    def __init__(self, buffer: ReplayBuffer | str, obs_keys: Iterable[str], n_obs_steps: int, n_action_steps: int,
                 gamma: float, reward_convention: str = "vgps", num_final_steps: int = 3,
                 failed_episodes: Iterable[int] = (), normalizer: LinearNormalizer | None = None):
        if n_obs_steps < 1 or n_action_steps < 1:
            raise ValueError(f"n_obs_steps and n_action_steps must be >= 1, got {n_obs_steps}, {n_action_steps}")
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma must be in (0, 1), got {gamma}")
        if not isinstance(buffer, ReplayBuffer):
            buffer = ReplayBuffer.open(buffer)
        if buffer.n_episodes == 0:
            raise DatasetError(f"{buffer.path} has no episodes")
        self.obs_keys = list(obs_keys)
        keys = [*self.obs_keys, "action"] + (["reward"] if reward_convention == "dataset" else [])
        data, self.obs_shapes, image_keys = load_arrays(buffer, self.obs_keys, keys[len(self.obs_keys):])
        ends = buffer.episode_ends
        self.episode_ends = ends
        self.fingerprint = data_fingerprint(data, ends)  # identifies the data by content (resume checks it)
        self.success = episode_success(buffer, failed_episodes)
        reward, terminal = label_rewards(ends, self.success, reward_convention, data.get("reward"), num_final_steps)
        self.normalizer = normalizer or LinearNormalizer.fit({k: data[k] for k in [*self.obs_keys, "action"]
                                                              if k not in image_keys})
        self.action_dim = data["action"].shape[1]

        n = len(reward)
        episode = np.repeat(np.arange(len(ends)), np.diff(np.concatenate([[0], ends])))
        start = np.concatenate([[0], ends[:-1]])[episode]
        last = ends[episode] - 1
        t = np.arange(n)

        offsets = np.arange(n_action_steps)
        steps = t[:, None] + offsets  # (N, Ta) unclamped
        inside = steps <= last[:, None]
        clamped = np.minimum(steps, last[:, None])
        term = terminal[clamped] & inside
        # a step counts if it is inside the episode and no earlier step of the chunk was terminal
        alive = inside & (np.cumsum(term, axis=1) - term == 0)
        chunk_reward = (reward[clamped] * alive * gamma ** offsets).sum(axis=1)
        done = (term & alive).any(axis=1)
        # A chunk that runs past the end of an episode cut off by the time limit has no next
        # decision: close it with the same tail value as `monte_carlo_returns` (the last reward
        # repeated forever) instead of bootstrapping from a clamped copy of its own state.
        tail = np.where(terminal[ends - 1], 0.0, reward[ends - 1] / (1.0 - gamma))[episode]
        cut = ~done & (t + n_action_steps > last)
        chunk_reward = chunk_reward + cut * gamma ** (last - t + 1) * tail
        done = done | cut
        nxt = np.minimum(t + n_action_steps, last)

        norm = self.normalizer

        def chunk(idx):
            return torch.from_numpy(norm.normalize("action", data["action"][idx]).reshape(n, -1).astype(np.float32))

        self.obs_data = {k: data[k] for k in self.obs_keys}
        self.obs_index = history_indices(t, start, n_obs_steps)  # (N, To), edge-padded at the episode start
        self.next_obs_index = history_indices(nxt, start, n_obs_steps)
        self.chunk = chunk(clamped)
        self.next_chunk = chunk(np.minimum(nxt[:, None] + offsets, last[:, None]))
        self.reward = torch.from_numpy(chunk_reward.astype(np.float32))
        self.done = torch.from_numpy(done.astype(np.float32))
        self.discount = torch.full((n,), float(gamma ** n_action_steps))
        self.mc_return = torch.from_numpy(monte_carlo_returns(reward, terminal, ends, gamma))
        self.path = buffer.path

    def __len__(self) -> int:
        return len(self.reward)

    def observations(self, index: np.ndarray) -> dict[str, torch.Tensor]:
        """Raw observation histories {key: (B, To, *shape)} at history indices `index` (B, To)."""
        return {k: torch.from_numpy(v[index].reshape(*index.shape, *self.obs_shapes[k]))
                for k, v in self.obs_data.items()}

    def batch(self, ids, device: torch.device, encode) -> dict[str, torch.Tensor]:
        """The transitions `ids` as a dict of tensors on `device`; `encode` (the Q-function's `encode_obs`)
        turns the observation histories into cond / next_cond (the next one without gradients)."""
        ids = np.asarray(torch.as_tensor(ids).cpu())
        out = {k: getattr(self, k)[ids].to(device) for k in
               ("chunk", "reward", "done", "discount", "next_chunk", "mc_return")}
        out["cond"] = encode(self.observations(self.obs_index[ids]))
        with torch.no_grad():
            out["next_cond"] = encode(self.observations(self.next_obs_index[ids]))
        return out


@dataclass
class OfflineQConfig:
    """Hyperparameters of `OfflineQLearner` (defaults follow Cal-QL / V-GPS and IQL)."""

    algorithm: str = "cal_ql"  # cal_ql | iql
    lr: float = 3e-4
    tau: float = 0.005  # Polyak rate of the target critics
    cql_alpha: float = 5.0  # Cal-QL: weight of the conservative term (V-GPS uses 5)
    n_random: int = 4  # Cal-QL: uniform OOD chunks per state
    n_perturbed: int = 4  # Cal-QL: Gaussian perturbations of the dataset chunk per state
    perturb_std: float = 0.1  # ... their std in normalized action units
    calibrate: bool = True  # Cal-QL's floor at the Monte-Carlo return (False: plain CQL)
    expectile: float = 0.7  # IQL's expectile tau

    def __post_init__(self):
        if self.algorithm not in ("cal_ql", "iql"):
            raise ValueError(f"algorithm must be 'cal_ql' or 'iql', got {self.algorithm!r}")
        if not 0.0 < self.expectile < 1.0:
            raise ValueError(f"expectile must be in (0, 1), got {self.expectile}")
        if self.cql_alpha < 0 or self.n_random < 0 or self.n_perturbed < 0:
            raise ValueError("cql_alpha, n_random and n_perturbed must be >= 0")


class OfflineQLearner:
    """Gradient updates of a `QFunction` by Cal-QL or IQL (see the module docstring)."""

    def __init__(self, q: QFunction, config: OfflineQConfig):
        if (config.algorithm == "iql") != (q.value is not None):
            raise ValueError(f"the QFunction was built for {q.config.algorithm!r}, the learner runs {config.algorithm!r}")
        self.q, self.config = q, config
        self.target = copy.deepcopy(q.critics).requires_grad_(False)
        self.optimizer = torch.optim.Adam(q.parameters(), lr=config.lr)

    def conservative_gap(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """CQL(H) term per critic and state: logsumexp_OOD Q - log N - Q(dataset chunk), (n_critics, B);
        also returns Q of the dataset chunks (n_critics, B)."""
        c, q = self.config, self.q
        cond, chunk = batch["cond"], batch["chunk"]
        b, d = chunk.shape
        q_data = q(cond, chunk)
        candidates = []
        if c.n_random:
            candidates.append(torch.rand((b, c.n_random, d), device=chunk.device, generator=generator) * 2 - 1)
        if c.n_perturbed:
            noise = torch.randn((b, c.n_perturbed, d), device=chunk.device, generator=generator)
            candidates.append((chunk[:, None] + c.perturb_std * noise).clamp(-1, 1))
        ood = torch.cat(candidates, dim=1)
        m = ood.shape[1]
        q_ood = q(cond.repeat_interleave(m, dim=0), ood.reshape(b * m, d)).reshape(-1, b, m)
        if c.calibrate and c.n_perturbed:
            floor = batch["mc_return"][None, :, None]
            q_ood = torch.cat([q_ood[..., :c.n_random], torch.maximum(q_ood[..., c.n_random:], floor)], dim=-1)
        gap = torch.logsumexp(q_ood, dim=-1) - np.log(m) - q_data
        return gap, q_data

    def update(self, batch: dict, generator: torch.Generator | None = None,
               before_step: Callable[[], None] | None = None) -> dict[str, float]:
        """One gradient step on a batch from `ChunkTransitions.batch`; returns scalar diagnostics.

        `before_step` runs between the backward pass and the optimizer step (a distributed run averages the
        ranks' gradients there)."""
        c, q = self.config, self.q
        not_done = 1.0 - batch["done"]
        stats: dict[str, float] = {}
        if c.algorithm == "iql":
            with torch.no_grad():
                q_target = self.target(torch.cat([batch["cond"], batch["chunk"]], -1)).min(dim=0).values
                y = batch["reward"] + batch["discount"] * not_done * q.value(batch["next_cond"])[0]
            diff = q_target - q.value(batch["cond"])[0]
            weight = torch.abs(c.expectile - (diff < 0).float())
            v_loss = (weight * diff ** 2).mean()
            q_data = q(batch["cond"], batch["chunk"])
            td_loss = ((q_data - y) ** 2).mean()
            loss = td_loss + v_loss
            stats["v_loss"] = float(v_loss.detach())
        else:
            with torch.no_grad():
                q_next = self.target(torch.cat([batch["next_cond"], batch["next_chunk"]], -1)).min(dim=0).values
                y = batch["reward"] + batch["discount"] * not_done * q_next
            if c.cql_alpha > 0 and (c.n_random or c.n_perturbed):
                gap, q_data = self.conservative_gap(batch, generator)
                cql = gap.mean()
            else:
                q_data, cql = q(batch["cond"], batch["chunk"]), torch.zeros(())
            td_loss = ((q_data - y) ** 2).mean()
            loss = td_loss + c.cql_alpha * cql
            stats["cql_gap"] = float(cql.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if before_step is not None:
            before_step()
        self.optimizer.step()
        with torch.no_grad():
            for p_t, p in zip(self.target.parameters(), q.critics.parameters()):
                p_t.lerp_(p, c.tau)
        stats.update(loss=float(loss.detach()), td_loss=float(td_loss.detach()), q_mean=float(q_data.detach().mean()))
        return stats
