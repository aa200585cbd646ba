"""Offline Q-functions over action chunks and value-guided re-ranking of a policy's samples (V-GPS)."""

from robolearn.value.offline import (
           ChunkTransitions,
           OfflineQConfig,
           OfflineQLearner,
           monte_carlo_returns,
)
from robolearn.value.qfunction import (
           QFunction,
           QFunctionConfig,
           load_q_function,
           save_q_function,
)
from robolearn.value.rerank import ValueGuidedPolicy, select_candidates

__all__ = ["ChunkTransitions", "OfflineQConfig", "OfflineQLearner", "QFunction", "QFunctionConfig",
           "ValueGuidedPolicy", "load_q_function", "monte_carlo_returns", "save_q_function", "select_candidates"]
