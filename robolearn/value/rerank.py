"""Value-guided action selection at deployment (V-GPS; Nakamoto et al. 2024, Sec. 4.2).

The policy stays frozen: for each observation it draws K candidate action chunks in one batched
pass, a Q-function scores them, and one is executed: the argmax, or a draw from
softmax(Q / temperature). A "random" selection picks uniformly among the same K candidates, the
control that shows whether the gain comes from the Q-function or from merely sampling K chunks.
"""

from __future__ import annotations

import torch

SELECTIONS = ("q", "random")


def select_candidates(scores: torch.Tensor, temperature: float = 0.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Index of the chosen candidate per row: scores (B, K) -> (B,) long.

    temperature 0 takes the argmax; temperature > 0 samples from softmax(scores / temperature),
    which tends to the argmax as temperature -> 0.

    Raises:
        ValueError: temperature < 0.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return scores.argmax(dim=1)
    logits = (scores - scores.max(dim=1, keepdim=True).values) / temperature
    return torch.multinomial(torch.softmax(logits.double(), dim=1), 1, generator=generator).squeeze(1)


class ValueGuidedPolicy:
    """A policy wrapper that re-ranks K sampled action chunks with a Q-function.

    It offers the same interface as the policies (`robolearn.policies.base.Policy`: `obs_features`,
    `n_obs_steps`, `n_action_steps`, `device`, `predict_action`, `sample_chunks`), so `PolicyRunner`, `robolearn eval` and the ROS 2
    policy node run it like any other policy.

    Args:
        policy: any policy with `sample_chunks(obs, k, generator) -> (B, k, n_action_steps, Da)`.
        q_function: scores chunks: `score(obs, chunks) -> (B, k)` and `check_matches(policy)`
            (a `robolearn.value.QFunction`).
        k: candidates per decision (>= 1).
        temperature: 0 for the argmax, > 0 for softmax(Q / temperature) sampling.
        selection: "q" (use the scores) or "random" (uniform among the K; the control).

    Raises:
        ValueError: k < 1, temperature < 0, an unknown selection, or a Q-function whose
            observation features, action_dim or chunk length differ from the policy's.
    """

    def __init__(self, policy, q_function, k: int = 16, temperature: float = 0.0, selection: str = "q"):
        if k < 1:
            raise ValueError(f"rerank k must be >= 1, got {k}")
        if temperature < 0:
            raise ValueError(f"rerank temperature must be >= 0, got {temperature}")
        if selection not in SELECTIONS:
            raise ValueError(f"rerank selection must be one of {SELECTIONS}, got {selection!r}")
        q_function.check_matches(policy)
        self.policy, self.q_function = policy, q_function
        self.k, self.temperature, self.selection = int(k), float(temperature), selection
        self.config = policy.config
        #: Q of the executed chunk at the last decision, (B,) (for logging)
        self.last_scores: torch.Tensor | None = None

    @property
    def obs_features(self) -> dict:
        return self.policy.obs_features

    @property
    def obs_keys(self) -> list[str]:
        return list(self.policy.obs_features)

    @property
    def n_obs_steps(self) -> int:
        return self.policy.n_obs_steps

    @property
    def n_action_steps(self) -> int:
        return self.policy.n_action_steps

    @property
    def device(self) -> torch.device:
        return self.policy.device

    def sample_chunks(self, obs: dict, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The wrapped policy's own candidates, (B, k, n_action_steps, Da)."""
        return self.policy.sample_chunks(obs, k, generator)

    @torch.no_grad()
    def predict_action(self, obs: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """obs {key: (B, n_obs_steps, D)} -> the selected chunk (B, n_action_steps, Da), raw units."""
        chunks = self.policy.sample_chunks(obs, self.k, generator)
        b = chunks.shape[0]
        if self.selection == "random":
            idx = torch.randint(0, self.k, (b,), device=chunks.device, generator=generator)
            self.last_scores = None
        else:
            scores = self.q_function.score(obs, chunks).to(chunks.device)
            idx = select_candidates(scores, self.temperature, generator)
            self.last_scores = scores[torch.arange(b), idx]
        return chunks[torch.arange(b, device=chunks.device), idx]
