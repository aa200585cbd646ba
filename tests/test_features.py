"""The house's seams: observation features and the ObsEncoder, configs built from `_target_`, the task config,
the observation history and the train state."""

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from robolearn.datasets import LinearNormalizer
from robolearn.policies import DiffusionPolicyConfig
from robolearn.policies.base import Policy
from robolearn.policies.checkpoint import load_policy, save_policy
from robolearn.policies.config import config_from_target
from robolearn.policies.features import (
    ObsEncoder,
    ObsFeature,
    check_features,
    features_to_dict,
    low_dim_spec,
    parse_features,
)
from robolearn.policies.history import ObsHistory, history_indices
from robolearn.policies.train_state import TrainState
from robolearn.tasks import task_from_config

PUSHT_FEATURES = {"keypoint": {"shape": [9, 2], "type": "low_dim"}, "state": {"shape": [5], "type": "low_dim"}}


def normalizer_for(features: dict, action_dim: int = 2, seed: int = 0) -> LinearNormalizer:
    rng = np.random.default_rng(seed)
    sizes = {k: f.size for k, f in parse_features(features).items()}
    return LinearNormalizer.fit({**{k: rng.uniform(0, 512, (64, n)) for k, n in sizes.items()},
                                 "action": rng.uniform(0, 512, (64, action_dim))})


def test_feature_spec_round_trip_and_errors_name_the_key():
    features = parse_features(PUSHT_FEATURES)
    assert features["keypoint"] == ObsFeature((9, 2), "low_dim") and features["keypoint"].size == 18
    assert features_to_dict(features) == PUSHT_FEATURES
    assert list(features) == ["keypoint", "state"]  # the order is the encoding order
    with pytest.raises(ValueError, match=r"obs_features `img`: an rgb feature has shape \(H, W, 3\)"):
        parse_features({"img": {"shape": [96, 96], "type": "rgb"}})
    with pytest.raises(ValueError, match=r"obs_features `state`: type must be one of"):
        parse_features({"state": {"shape": [5], "type": "vector"}})
    with pytest.raises(ValueError, match=r"obs_features `state` must be \{shape"):
        parse_features({"state": {"shape": [5], "typ": "low_dim"}})
    with pytest.raises(ValueError, match=r"dataset d.zarr: observation `keypoint` has shape \[8, 2\], expected \[9, 2\]"):
        check_features(features, {"keypoint": (8, 2), "state": (5,)}, "dataset d.zarr")
    with pytest.raises(ValueError, match=r"env E has no observation `state` \(low_dim \[5\]\)"):
        check_features(features, {"keypoint": (9, 2)}, "env E")


def test_obs_encoder_flattens_normalizes_and_checks_shapes():
    features = parse_features(PUSHT_FEATURES)
    normalizer = normalizer_for(PUSHT_FEATURES)
    encoder = ObsEncoder(features, normalizer, n_obs_steps=2)
    assert encoder.out_dim == 2 * (18 + 5)
    obs = {"keypoint": torch.rand(4, 3, 9, 2) * 512, "state": torch.rand(4, 3, 5) * 512}
    out = encoder(obs)
    assert out.shape == (4, 46)
    expected = normalizer.normalize("keypoint", obs["keypoint"][:, -2:].reshape(4, 2, 18))  # the last To steps
    torch.testing.assert_close(out.reshape(4, 2, 23)[..., :18], expected)
    with pytest.raises(ValueError, match=r"observation `keypoint` must have shape \(B, 2, 9, 2\), got \(4, 2, 8, 2\)"):
        encoder({**obs, "keypoint": torch.zeros(4, 2, 8, 2)})
    with pytest.raises(ValueError, match="observation lacks key `state`"):
        encoder({"keypoint": obs["keypoint"]})


class TinyImageEncoder(nn.Module):
    out_dim = 7

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 7)

    def forward(self, images):  # (N, H, W, 3) uint8 -> (N, 7)
        return self.linear(images.float().mean(dim=(1, 2)) / 255)


def test_obs_encoder_takes_rgb_keys_through_an_image_encoder():
    spec = {"img": {"shape": [8, 8, 3], "type": "rgb"}, "state": {"shape": [2], "type": "low_dim"}}
    features, normalizer = parse_features(spec), normalizer_for({"state": spec["state"]})
    with pytest.raises(ValueError, match="observation `img` is an rgb feature: it needs an image encoder"):
        ObsEncoder(features, normalizer, n_obs_steps=2)
    encoder = ObsEncoder(features, normalizer, n_obs_steps=2, image_encoders={"img": TinyImageEncoder()})
    out = encoder({"img": torch.randint(0, 255, (3, 2, 8, 8, 3), dtype=torch.uint8), "state": torch.zeros(3, 2, 2)})
    assert encoder.out_dim == 2 * (7 + 2) and out.shape == (3, 18)
    assert any(p.requires_grad for p in encoder.parameters())  # trainable, so its owner trains and saves it


def test_policy_feature_spec_round_trips_through_a_checkpoint(tmp_path):
    config = DiffusionPolicyConfig(obs_features=PUSHT_FEATURES, action_dim=2, horizon=8, n_obs_steps=2,
                                   n_action_steps=4, down_dims=[8, 16], step_embed_dim=8, num_inference_steps=3)
    policy = config.build(normalizer_for(PUSHT_FEATURES))
    assert isinstance(policy, Policy)  # the structural policy interface
    save_policy(tmp_path / "ckpt", policy)
    saved = yaml.safe_load((tmp_path / "ckpt" / "config.yaml").read_text())
    assert saved["config_class"] == "DiffusionPolicyConfig" and saved["policy"]["obs_features"] == PUSHT_FEATURES
    loaded = load_policy(tmp_path / "ckpt", use_ema=False)
    assert loaded.obs_features == policy.obs_features
    obs = {"keypoint": torch.rand(2, 2, 9, 2) * 512, "state": torch.rand(2, 2, 5) * 512}
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(loaded.predict_action(obs, generator=g()), policy.eval().predict_action(obs, generator=g()))


def test_older_checkpoints_with_obs_dims_still_load(tmp_path):
    config = DiffusionPolicyConfig(obs_features=low_dim_spec({"state": 3}), action_dim=2, horizon=8,
                                   down_dims=[8, 16], step_embed_dim=8)
    policy = config.build(normalizer_for(low_dim_spec({"state": 3})))
    save_policy(tmp_path / "ckpt", policy)
    # rewrite the folder as the previous layout had it: obs_keys + obs_dims, policy_class, denoiser-only weights
    from safetensors.torch import load_file, save_file

    path = tmp_path / "ckpt" / "config.yaml"
    saved = yaml.safe_load(path.read_text())
    saved.pop("config_class")
    saved["policy"].pop("obs_features")
    saved["policy"].update(obs_keys=["state"], obs_dims=[3])
    path.write_text(yaml.safe_dump(saved))
    for name in ("model.safetensors", "ema.safetensors"):
        state = load_file(tmp_path / "ckpt" / name)
        save_file({k[len("model."):]: v for k, v in state.items()}, tmp_path / "ckpt" / name)
    loaded = load_policy(tmp_path / "ckpt")
    assert loaded.obs_features == {"state": ObsFeature((3,))}
    torch.testing.assert_close(loaded.model.state_dict(), policy.model.state_dict())


def test_configs_are_built_from_target_and_misspelled_keys_are_refused():
    spec = {"_target_": "robolearn.policies.diffusion.DiffusionPolicyConfig", "name": "diffusion_unet",
            "horizon": 8, "down_dims": [8, 16]}
    config = config_from_target(spec, obs_features=PUSHT_FEATURES, action_dim=2)
    assert isinstance(config, DiffusionPolicyConfig) and config.horizon == 8 and config.obs_keys == ["keypoint", "state"]
    with pytest.raises(ValueError, match=r"unknown DiffusionPolicyConfig keys \['dwn_dims'\]"):
        config_from_target({**spec, "dwn_dims": [1]}, obs_features=PUSHT_FEATURES, action_dim=2)
    with pytest.raises(ValueError, match="is not a robolearn config class"):
        config_from_target({**spec, "_target_": "collections.OrderedDict"})
    with pytest.raises(ValueError, match="needs `_target_"):
        config_from_target({"horizon": 8})


def test_task_config_is_strict():
    task = task_from_config({"name": "t", "env_id": None, "obs_features": PUSHT_FEATURES, "metric": "mean_score"})
    assert task.obs_keys == ["keypoint", "state"] and task.features_spec == PUSHT_FEATURES
    with pytest.raises(ValueError, match=r"unknown keys \['obs_keys'\]"):
        task_from_config({"name": "t", "obs_features": PUSHT_FEATURES, "obs_keys": ["state"]})
    with pytest.raises(ValueError, match="metric must be one of"):
        task_from_config({"name": "t", "obs_features": PUSHT_FEATURES, "metric": "reward"})
    with pytest.raises(ValueError, match="expert must be a mapping with a `_target_`"):
        task_from_config({"name": "t", "obs_features": PUSHT_FEATURES, "expert": "PushTExpert"})


def test_obs_history_pads_with_the_first_observation():
    history = ObsHistory(3, axis=1)
    history.push({"x": np.array([[1.0], [10.0]])})  # 2 envs
    np.testing.assert_array_equal(history.stacked()["x"][:, :, 0], [[1, 1, 1], [10, 10, 10]])
    history.push({"x": np.array([[2.0], [20.0]])})
    np.testing.assert_array_equal(history.stacked()["x"][:, :, 0], [[1, 1, 2], [10, 10, 20]])
    history.reset()
    with pytest.raises(ValueError, match="empty"):
        history.stacked()
    # the index form for stored episodes: episode 0 is [0, 3), episode 1 starts at 3
    np.testing.assert_array_equal(history_indices(np.array([0, 2, 3, 4]), np.array([0, 0, 3, 3]), 2),
                                  [[0, 0], [1, 2], [3, 3], [3, 4]])


def test_train_state_round_trip():
    net = nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    critic, gen, rng = nn.Linear(2, 1), torch.Generator().manual_seed(5), np.random.default_rng(7)
    state = TrainState({"opt": opt}, {"lr": sched}, {"critic": critic}, {"noise": gen}, {"batches": rng})
    tensors, meta = state.pack(step=12, best=0.5)
    expected_draw, expected_rng = torch.rand(1, generator=gen), rng.random()

    net2 = nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(net2.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    critic2, gen2 = nn.Linear(2, 1), torch.Generator()
    other = TrainState({"opt": opt2}, {"lr": sched2}, {"critic": critic2}, {"noise": gen2},
                       {"batches": np.random.default_rng(0)})
    assert other.restore(tensors, meta) == {"step": 12, "best": 0.5}
    assert sched2.get_last_lr() == sched.get_last_lr()
    torch.testing.assert_close(critic2.state_dict(), critic.state_dict())
    torch.testing.assert_close(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert torch.rand(1, generator=gen2) == expected_draw and other.rngs["batches"].random() == expected_rng
