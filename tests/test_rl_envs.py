"""Chunk-level vector envs for fine-tuning: the worker processes give exactly what one process gives."""

import numpy as np
import pytest

import robolearn.sim  # noqa: F401 - registers robolearn/Lift-v0
from robolearn.rl.envs import WorkerVectorEnv, make_chunk_vector_env

LIFT = ("robolearn/Lift-v0", {"max_episode_seconds": 0.6})  # 12 env steps: 3 chunks of 4, then a reset


def assert_same(a, b, path="step"):
    """Equal nested results: tuples, dicts (same keys), object arrays (final_obs: dicts or None) and arrays."""
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same(u, v, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys differ: {set(a) ^ set(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, np.ndarray) and a.dtype == object:
        assert b.dtype == object and len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            assert (u is None) == (v is None), f"{path}[{i}]"
            if u is not None:
                assert_same(u, v, f"{path}[{i}]")
    else:
        np.testing.assert_array_equal(a, b, err_msg=path)
        assert np.asarray(a).dtype == np.asarray(b).dtype, path


def test_workers_step_the_envs_as_one_process_does():
    sync = make_chunk_vector_env(*LIFT, n_envs=5, n_obs_steps=2, n_action_steps=4, vectorization="sync")
    workers = make_chunk_vector_env(*LIFT, n_envs=5, n_obs_steps=2, n_action_steps=4, vectorization="workers",
                                    n_workers=2)  # 3 + 2 envs
    try:
        assert isinstance(workers, WorkerVectorEnv) and workers.num_envs == 5
        assert workers.observation_space == sync.observation_space and workers.action_space == sync.action_space
        seeds = [11, 12, 13, 14, 15]
        assert_same(workers.reset(seed=seeds), sync.reset(seed=seeds), "reset")
        rng = np.random.default_rng(0)
        space = sync.action_space
        resets = 0
        for t in range(5):  # the 3rd chunk ends every episode: final_obs and final_info from both workers
            chunk = (space.low + (space.high - space.low) * rng.uniform(0.3, 0.7, space.shape)).astype(space.dtype)
            got, expected = workers.step(chunk), sync.step(chunk)
            assert_same(got, expected, f"step {t}")
            resets += int(np.sum(expected[2] | expected[3]))
        assert resets == 5
    finally:
        workers.close()
        sync.close()
    assert not any(p.is_alive() for p in workers._processes)


def test_a_worker_error_is_raised_with_its_traceback():
    envs = make_chunk_vector_env(*LIFT, n_envs=2, n_obs_steps=2, n_action_steps=4, vectorization="workers")
    envs.reset(seed=[0, 1])
    wrong = np.zeros((2, 3, envs.single_action_space.shape[-1]), np.float32)  # chunks of 3, not 4
    with pytest.raises(RuntimeError, match=r"(?s)an env worker failed.*action chunk must have shape"):
        envs.step(wrong)
    assert not any(p.is_alive() for p in envs._processes)  # the failure closed every worker


def test_bad_vectorization_settings_are_clear_errors():
    with pytest.raises(ValueError, match="n_workers must be >= 1"):
        make_chunk_vector_env(*LIFT, n_envs=2, n_obs_steps=2, n_action_steps=4, vectorization="workers",
                              n_workers=0)
    with pytest.raises(ValueError, match="vectorization must be 'sync', 'workers' or 'async'"):
        make_chunk_vector_env(*LIFT, n_envs=2, n_obs_steps=2, n_action_steps=4, vectorization="threads")
