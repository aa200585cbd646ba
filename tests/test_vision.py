"""Camera observations: rendering, the uint8 data path, the image encoders (crops, the fixed normalizer,
learning from pixels), checkpoints with encoders, image messages and the ROS inbox's handling of frames."""

import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from ros_helpers import FakeTransport

from robolearn.datasets import LinearNormalizer, ReplayBuffer, SequenceDataset
from robolearn.policies import DiffusionPolicyConfig
from robolearn.policies.checkpoint import load_policy, save_policy
from robolearn.policies.features import check_features, parse_features
from robolearn.policies.vision import (
    ImageEncoder,
    build_image_encoders,
    crop_images,
    image_encoder_config,
    normalize_images,
)
from robolearn.ros.images import (
    camera_topic,
    compressed_image_message,
    frame_from_message,
    image_message,
)
from robolearn.ros.msgs import Header, Image, JointState, Time
from robolearn.ros.node import ObservationInbox, stamp
from robolearn.sim.arm import JOINT_NAMES

SIZE = 32  # px: small images keep these tests fast
DOT_SPEC = {"img": {"shape": [SIZE, SIZE, 3], "type": "rgb"}, "state": {"shape": [1], "type": "low_dim"}}


def test_lift_cameras_are_deterministic_per_seed_and_differ_between_seeds():
    from robolearn.sim.lift import LiftEnv

    env_a, env_b = LiftEnv(cameras=("front", "wrist"), image_size=(48, 48)), LiftEnv(cameras=("front", "wrist"),
                                                                                     image_size=(48, 48))
    a, _ = env_a.reset(seed=5)
    b, _ = env_b.reset(seed=5)
    c, _ = env_b.reset(seed=6)
    for key in ("front_image", "wrist_image"):
        assert a[key].shape == (48, 48, 3) and a[key].dtype == np.uint8
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["front_image"], c["front_image"])  # the cube moved
    step = env_a.step(env_a.data.ctrl.copy())[0]
    assert set(step) >= {"front_image", "wrist_image", "joint_pos"}
    with pytest.raises(ValueError, match="cameras must be among"):
        LiftEnv(cameras=("back",))
    env_a.close()
    env_b.close()


def image_buffer(path, n_episodes=3, length=7):
    """Episodes whose frame t of episode e has every pixel = 10 e + t (so windows can be checked exactly)."""
    buffer = ReplayBuffer.create(path)
    for e in range(n_episodes):
        t = np.arange(length)
        value = (10 * e + t).astype(np.uint8)
        buffer.add_episode({"img": np.broadcast_to(value[:, None, None, None], (length, SIZE, SIZE, 3)).copy(),
                            "state": (10 * e + t)[:, None].astype(np.float32),
                            "action": np.stack([t, -t], 1).astype(np.float32)})
    buffer.close()
    return path


def test_images_round_trip_as_uint8_through_the_buffer_and_the_sampler(tmp_path):
    path = image_buffer(tmp_path / "img.zarr")
    rb = ReplayBuffer.open(path)
    assert rb.root["data/img"].dtype == np.uint8
    assert rb.root["data/img"].chunks[0] > 1  # several frames per chunk (bench/image_storage.py)
    data = SequenceDataset(path, ["img", "state"], horizon=4, n_obs_steps=2, n_action_steps=2, val_ratio=0.0)
    assert data.image_keys == ["img"] and data.data["img"].dtype == np.uint8  # no float copy of the images
    batch = data.get_batch(np.arange(len(data)))
    images, state = batch["obs"]["img"], batch["obs"]["state"]
    assert images.dtype == torch.uint8 and images.shape == (len(data), 2, SIZE, SIZE, 3)
    # each window's frames are the ones of its state steps (same episode, same time, edge-padded)
    np.testing.assert_array_equal(images[:, :, 0, 0, 0].numpy(), state[:, :, 0].numpy().astype(np.uint8))
    assert (images.flatten(2).amin(-1) == images.flatten(2).amax(-1)).all()  # whole frames, not mixed
    assert "img" not in data.fit_normalizer().params  # images use the fixed map, not statistics


def test_the_image_normalizer_is_a_fixed_map_to_minus_one_one():
    images = torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(1, 1, 3, 1).expand(2, 4, 3, 3)
    out = normalize_images(images)
    assert out.shape == (2, 3, 4, 3) and out.dtype == torch.float32
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([-1.0, -0.6, 1.0]))


def test_random_crops_in_training_and_the_centre_crop_at_evaluation():
    images = torch.arange(10 * 10, dtype=torch.int64).reshape(1, 10, 10, 1).expand(64, 10, 10, 1)
    centre = crop_images(images, (8, 8), random=False)
    assert torch.equal(centre[0], images[0, 1:9, 1:9])
    crops = crop_images(images, (8, 8), random=True, generator=torch.Generator().manual_seed(0))
    corners = {int(c) for c in crops[:, 0, 0, 0]}
    assert crops.shape == (64, 8, 8, 1) and len(corners) > 3  # crops differ per image
    for crop, corner in zip(crops, crops[:, 0, 0, 0]):  # each crop is a contiguous window of its image
        top, left = divmod(int(corner), 10)
        assert torch.equal(crop, images[0, top:top + 8, left:left + 8])
    encoder = ImageEncoder((SIZE, SIZE, 3), {"crop_ratio": 0.875})
    frames = torch.randint(0, 255, (4, SIZE, SIZE, 3), dtype=torch.uint8)
    encoder.eval()
    torch.testing.assert_close(encoder(frames), encoder(frames))  # evaluation is deterministic
    encoder.train()
    torch.manual_seed(0)
    first = encoder(frames)
    assert not torch.allclose(first, encoder(frames))  # training augments


def test_image_encoder_config_and_errors_name_the_camera_and_shapes():
    assert image_encoder_config(None)["type"] == "small_cnn"
    with pytest.raises(ValueError, match="unknown image_encoder keys"):
        image_encoder_config({"kind": "cnn"})
    with pytest.raises(ValueError, match="type must be one of"):
        image_encoder_config({"type": "vit"})
    features = parse_features({"front_image": {"shape": [96, 96, 3], "type": "rgb"},
                               "wrist_image": {"shape": [96, 96, 3], "type": "rgb"}})
    with pytest.raises(ValueError, match=r"`wrist_image` has shape \[64, 64, 3\], expected \[96, 96, 3\] \(rgb\)"):
        check_features(features, {"front_image": (96, 96, 3), "wrist_image": (64, 64, 3)}, "dataset d.zarr")
    with pytest.raises(ValueError, match=r"has no observation `wrist_image` \(rgb \[96, 96, 3\]\)"):
        check_features(features, {"front_image": (96, 96, 3)}, "env robolearn/Lift-v0")
    shared = build_image_encoders(features, {"shared": True})
    assert shared["front_image"] is shared["wrist_image"]
    separate = build_image_encoders(features, {})
    assert separate["front_image"] is not separate["wrist_image"]
    with pytest.raises(ValueError, match=r"images must be uint8 \(N, 96, 96, 3\), got torch.float32"):
        separate["front_image"](torch.zeros(2, 96, 96, 3))


def dot_batch(rng, n):
    """A white dot on black at a random x; the action is the dot's x in [-1, 1] (held for the horizon)."""
    x = rng.integers(4, SIZE - 4, n)
    img = np.zeros((n, 2, SIZE, SIZE, 3), np.uint8)
    for i, xi in enumerate(x):
        img[i, :, SIZE // 2 - 2:SIZE // 2 + 2, xi - 2:xi + 2] = 255
    target = (x - SIZE / 2) / (SIZE / 2 - 4)
    action = np.repeat(target[:, None, None], 4, axis=1).astype(np.float32)
    return {"obs": {"img": torch.from_numpy(img), "state": torch.zeros(n, 2, 1)}, "action": torch.from_numpy(action)}, target


def dot_policy(seed=0, **image_encoder):
    torch.manual_seed(seed)
    config = DiffusionPolicyConfig(obs_features=DOT_SPEC, action_dim=1, horizon=4, n_obs_steps=2, n_action_steps=2,
                                   down_dims=[16, 32], step_embed_dim=16, num_inference_steps=8,
                                   image_encoder={"feature_dim": 16, "num_keypoints": 8, **image_encoder})
    normalizer = LinearNormalizer.fit({"state": np.array([[0.0], [1.0]]), "action": np.array([[-1.0], [1.0]])})
    return config.build(normalizer)


def test_encoder_and_denoiser_learn_an_action_from_pixels():
    """The action is a function of where a dot is in the image and of nothing else: the encoder must learn to
    see it (a policy blind to the image would answer the mean, an error of ~0.5)."""
    policy = dot_policy()
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(250):
        batch, _ = dot_batch(rng, 64)
        loss = policy.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy.eval()
    batch, target = dot_batch(np.random.default_rng(1), 64)
    action = policy.predict_action(batch["obs"], generator=torch.Generator().manual_seed(0))[:, 0, 0].numpy()
    error = np.abs(action - target).mean()
    print(f"dot error {error:.3f}")
    assert error < 0.2, f"mean action error {error:.3f} (blind policy: {np.abs(target).mean():.3f})"


LOADER = textwrap.dedent("""
    import json, pickle, sys
    import numpy as np, torch
    from robolearn.policies.checkpoint import load_policy

    def refuse(*args, **kwargs):
        raise AssertionError("pickle was used")

    pickle.load = pickle.loads = torch.load = refuse  # any unpickling while loading fails the test
    policy = load_policy(sys.argv[1])
    img = torch.from_numpy(np.load(sys.argv[2]))
    obs = {"img": img, "state": torch.zeros(img.shape[0], 2, 1)}
    print(json.dumps(policy.predict_action(obs, generator=torch.Generator().manual_seed(7)).tolist()))
""")


def test_checkpoint_with_image_encoders_round_trips_in_a_fresh_process_without_pickle(tmp_path):
    policy = dot_policy(seed=1, type="small_cnn")
    ema = dot_policy(seed=2)
    ema.normalizer = policy.normalizer
    save_policy(tmp_path / "ckpt", policy, ema)
    saved = load_policy(tmp_path / "ckpt").state_dict()
    assert any(k.startswith("obs_encoder.image_encoders.img.trunk") for k in saved)  # the encoder is in it
    batch, _ = dot_batch(np.random.default_rng(3), 3)
    np.save(tmp_path / "img.npy", batch["obs"]["img"].numpy())
    expected = ema.eval().predict_action(batch["obs"], generator=torch.Generator().manual_seed(7))
    proc = subprocess.run([sys.executable, "-c", LOADER, str(tmp_path / "ckpt"), str(tmp_path / "img.npy")],
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_array_equal(np.array(json.loads(proc.stdout)), expected.detach().numpy())


def test_resnet18_encoder_is_torchvision_with_groupnorm():
    try:
        import torchvision  # noqa: F401
    except Exception:  # noqa: BLE001 - PyPI's torchvision does not load beside our machines' CPU build of torch
        pytest.skip("torchvision does not import beside this torch build (bench/image_training.py measures it "
                    "in a venv with a matching pair)")
    encoder = ImageEncoder((SIZE * 2, SIZE * 2, 3), {"type": "resnet18"})
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and not [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert encoder(torch.zeros(2, SIZE * 2, SIZE * 2, 3, dtype=torch.uint8)).shape == (2, 64)


# -- ROS 2 ----------------------------------------------------------------------------------
def test_frames_round_trip_through_image_messages():
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)
    header = Header(stamp=Time(sec=3, nanosec=5))
    msg = image_message(frame, header)
    assert (msg.height, msg.width, msg.encoding, msg.step) == (6, 5, "rgb8", 15)
    np.testing.assert_array_equal(frame_from_message(Image.deserialize(msg.serialize())), frame)
    bgr = Image(header=header, height=6, width=5, encoding="bgr8", step=16,  # padded rows
                data=np.pad(frame[..., ::-1].reshape(6, 15), ((0, 0), (0, 1))).tobytes())
    np.testing.assert_array_equal(frame_from_message(bgr), frame)
    smooth = np.broadcast_to(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (24, 32, 3)).copy()
    decoded = frame_from_message(compressed_image_message(smooth, header, quality=95))
    assert decoded.shape == smooth.shape and np.abs(decoded.astype(int) - smooth).mean() < 3
    with pytest.raises(ValueError, match="encoding 'yuv422' is not supported"):
        frame_from_message(Image(height=1, width=1, encoding="yuv422", step=2, data=[0, 0]))
    with pytest.raises(ValueError, match="has 3 bytes"):
        frame_from_message(Image(height=2, width=2, encoding="rgb8", step=6, data=[0, 0, 0]))
    assert camera_topic("front_image") == "/camera/front/image_raw"
    assert camera_topic("wrist", "/arm/cams/", "compressed") == "/arm/cams/wrist/image_raw/compressed"


def make_inbox():
    transport = FakeTransport()
    params = {"joint_states_topic": "/joint_states", "gripper_opening_topic": "/gripper_opening",
              "camera_topic_prefix": "/camera", "image_transport": "raw"}
    inbox = ObservationInbox(transport, ["joint_pos", "front_image"], params, JOINT_NAMES)
    return transport, inbox


def send_joints(transport, t):
    transport.deliver("/joint_states", JointState(header=stamp(t), name=list(JOINT_NAMES), position=[0.1] * 6))


def send_frame(transport, t, value):
    transport.deliver("/camera/front/image_raw", image_message(np.full((4, 4, 3), value, np.uint8), stamp(t)))


def test_each_observation_takes_the_newest_frame_at_or_before_the_observation_time():
    transport, inbox = make_inbox()
    t = time.time()
    for i, value in enumerate((10, 20, 30)):  # frames at t, t + 0.05, t + 0.10
        send_frame(transport, t + 0.05 * i, value)
    send_joints(transport, t + 0.07)  # the joint state is the observation time
    obs = inbox.fresh(time.monotonic(), timeout=0.25)
    assert obs is not None and int(obs["front_image"][0, 0, 0]) == 20  # not the newer frame 30
    send_joints(transport, t + 0.12)
    assert int(inbox.fresh(time.monotonic(), 0.25)["front_image"][0, 0, 0]) == 30


def test_stale_camera_frames_mean_no_observation_and_name_the_topic():
    transport, inbox = make_inbox()
    send_frame(transport, time.time(), 50)
    send_joints(transport, time.time())
    assert inbox.fresh(time.monotonic(), 0.25) is not None
    later = time.monotonic() + 0.5  # the camera stopped; the joints go on
    inbox.latest["joint_pos"] = (inbox.latest["joint_pos"][0], later, inbox.latest["joint_pos"][2])
    assert inbox.fresh(later, 0.25) is None
    why = inbox.why_not_fresh(later, 0.25)
    assert "front_image on /camera/front/image_raw: stale" in why and "joint_pos" not in why
    transport.deliver("/camera/front/image_raw", Image(height=2, width=2, encoding="rgb8", step=6, data=[1]))
    assert "front_image" in inbox.errors and inbox.dropped == 1  # malformed frames are dropped, never used
