"""Datasets: the episode-indexed zarr replay buffer, window sampling, normalization."""

from robolearn.datasets.dataset import SequenceDataset
from robolearn.datasets.normalizer import LinearNormalizer
from robolearn.datasets.replay_buffer import (
                                              DatasetError,
                                              DatasetWarning,
                                              NotAReplayBufferError,
                                              ReplayBuffer,
                                              VerifyReport,
)
from robolearn.datasets.sampler import SequenceSampler, episode_split

__all__ = ["DatasetError", "DatasetWarning", "LinearNormalizer", "NotAReplayBufferError", "ReplayBuffer", "SequenceDataset", "SequenceSampler",
           "VerifyReport", "episode_split"]
