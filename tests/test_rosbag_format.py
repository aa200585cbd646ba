"""ROS 2 bags: import of a bag written here with rosbags (joint states, commands, a camera, a pose, triggers) with
time alignment to the control rate, episode boundaries from triggers or gaps, errors; and robolearn -> bag ->
robolearn round trips (MCAP and SQLite3)."""

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from robolearn.cli import main
from robolearn.datasets import ReplayBuffer
from robolearn.datasets.formats.common import FormatError
from robolearn.datasets.formats.rosbag import RosbagSource

STORE = get_typestore(Stores.ROS2_JAZZY)
T = STORE.types
NAMES = ["j0", "j1", "j2"]
S = 1_000_000_000
T0 = 1_000 * S


def header(t):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=t // S, nanosec=t % S), frame_id="w")


def joint_pos_at(t):
    """The arm's joint positions at time t (ns): a ramp, so a sample tells when it was sent."""
    return np.array([1.0, 2.0, 3.0]) * (t - T0) / S


def write_bag(path, triggers=True, storage=StoragePlugin.MCAP):
    """Joint states at 100 Hz (names in another order than NAMES), commands at 20 Hz 3 ms late, a camera at 10 Hz,
    a pose at 50 Hz; episodes [0.2 s, 1.2 s) and [2.0 s, 2.5 s) (triggers, or a gap without them); a third
    episode is discarded."""
    w = Writer(path, version=9, storage_plugin=storage)
    w.open()
    c = {topic: w.add_connection(topic, msgtype, typestore=STORE) for topic, msgtype in [
        ("/joint_states", "sensor_msgs/msg/JointState"), ("/position_controller/commands", "std_msgs/msg/Float64MultiArray"),
        ("/camera/front/image_raw", "sensor_msgs/msg/Image"), ("/cube_pose", "geometry_msgs/msg/PoseStamped"),
        ("/recorder/trigger", "std_msgs/msg/String"), ("/diagnostics_text", "std_msgs/msg/String")]}
    layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    spans = [(T0 + S // 5, T0 + 6 * S // 5), (T0 + 2 * S, T0 + 5 * S // 2), (T0 + 3 * S, T0 + 7 * S // 2)]
    messages = []
    for k, (a, b) in enumerate(spans):
        for t in range(a, b, S // 100):
            q = joint_pos_at(t)
            messages.append((t, "/joint_states", T["sensor_msgs/msg/JointState"](
                header=header(t), name=["j2", "j0", "j1"], position=q[[2, 0, 1]], velocity=-q[[2, 0, 1]],
                effort=np.zeros(0))))
        for t in range(a + 3_000_000, b, S // 20):
            messages.append((t, "/position_controller/commands", T["std_msgs/msg/Float64MultiArray"](
                layout=layout, data=joint_pos_at(t) + 0.5)))
        for t in range(a, b, S // 10):
            img = np.full((4, 6, 3), (t - T0) // (S // 10), np.uint8)
            messages.append((t, "/camera/front/image_raw", T["sensor_msgs/msg/Image"](
                header=header(t), height=4, width=6, encoding="rgb8", is_bigendian=0, step=18, data=img.reshape(-1))))
        for t in range(a, b, S // 50):
            pose = T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=(t - T0) / S, y=0.0, z=0.1),
                                               orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
            messages.append((t, "/cube_pose", T["geometry_msgs/msg/PoseStamped"](header=header(t), pose=pose)))
        if triggers:
            messages.append((a - 1, "/recorder/trigger", T["std_msgs/msg/String"](data="start")))
            messages.append((b, "/recorder/trigger", T["std_msgs/msg/String"](data="stop" if k < 2 else "discard")))
        messages.append((a, "/diagnostics_text", T["std_msgs/msg/String"](data="ok")))
    for t, topic, msg in sorted(messages, key=lambda m: m[0]):
        w.write(c[topic], t, STORE.serialize_cdr(msg, c[topic].msgtype))
    w.close()
    return path


def test_bag_imports_aligned_to_the_control_rate(tmp_path):
    bag = write_bag(tmp_path / "run1")
    assert main(["dataset", "import", "format=rosbag", f"source={bag}", f"output={tmp_path}/out.zarr",
                 "rosbag.rate_hz=20", f"rosbag.joint_names=[{','.join(NAMES)}]"]) == 0
    with ReplayBuffer.open(tmp_path / "out.zarr") as buffer:
        assert buffer.n_episodes == 2  # the third was discarded
        assert sorted(buffer.keys) == ["action", "cube_pos", "cube_quat", "done", "front_image", "joint_pos",
                                       "joint_vel", "timestamp"]
        ep = buffer.get_episode(0)
        # first tick: the first time every key has a message (the first command, 3 ms after the start)
        ticks = T0 + S // 5 + 3_000_000 + np.round(np.arange(len(ep["timestamp"])) * S / 20).astype(np.int64)
        assert len(ticks) == 20  # [0.203 s, 1.2 s) at 20 Hz
        held = (ticks - T0) // (S // 100) * (S // 100) + T0  # the newest 100 Hz joint state at or before each tick
        np.testing.assert_allclose(ep["joint_pos"], np.stack([joint_pos_at(t) for t in held]).astype(np.float32))
        np.testing.assert_allclose(ep["joint_vel"], -ep["joint_pos"])
        np.testing.assert_allclose(ep["action"][:, 0], (ticks - T0) / S + 0.5, atol=1e-6)  # commands land on ticks
        assert ep["front_image"].shape == (20, 4, 6, 3) and ep["front_image"].dtype == np.uint8
        assert ep["front_image"][0, 0, 0, 0] == 2 and ep["front_image"][-1, 0, 0, 0] == 11
        np.testing.assert_allclose(ep["cube_quat"], [[1, 0, 0, 0]] * 20)
        np.testing.assert_allclose(ep["timestamp"], np.arange(20) / 20)
        assert ep["done"].tolist() == [False] * 19 + [True]
        assert buffer.attrs["source"]["format"] == "rosbag"


def test_without_triggers_episodes_split_at_gaps(tmp_path):
    bag = write_bag(tmp_path / "run2", triggers=False, storage=StoragePlugin.SQLITE3)
    source = RosbagSource(bag, rate_hz=10, joint_names=NAMES, topics={"/camera/front/image_raw": None}, gap_s=0.3)
    episodes = [data for _, data in source.episodes()]
    source.close()
    assert len(episodes) == 3 and "front_image" not in episodes[0]
    assert [len(e["joint_pos"]) for e in episodes] == [10, 5, 5]


def test_bag_errors_name_the_problem(tmp_path):
    bag = write_bag(tmp_path / "run3")
    with pytest.raises(FormatError, match=r"names \['/wrench'\], which the bag does not have"):
        RosbagSource(bag, topics={"/wrench": "wrench"})
    with pytest.raises(FormatError, match="bag .*nowhere is missing"):
        RosbagSource(tmp_path / "nowhere")
    mcap = next(bag.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 3])
    with pytest.raises(FormatError, match="damaged or truncated|not a readable ROS 2 bag"):
        source = RosbagSource(bag)
        list(source.episodes())


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_robolearn_to_bag_and_back(tmp_path, lift_image_demo, storage):
    bag = tmp_path / "lift_bag"
    assert main(["dataset", "export", "format=rosbag", f"source={lift_image_demo}", f"output={bag}",
                 f"rosbag.storage={storage}"]) == 0
    assert sorted(p.name for p in bag.iterdir()) == sorted(["metadata.yaml", f"lift_bag.{'mcap' if storage == 'mcap' else 'db3'}"])
    source = RosbagSource(bag)  # the topics a ROS 2 graph would use
    assert {"/joint_states", "/position_controller/commands", "/cube_pose", "/gripper_opening",
            "/camera/front/image_raw", "/camera/wrist/image_raw"} <= set(source.topic_types)
    source.close()
    assert main(["dataset", "import", "format=rosbag", f"source={bag}", f"output={tmp_path}/back.zarr"]) == 0
    with ReplayBuffer.open(lift_image_demo) as a, ReplayBuffer.open(tmp_path / "back.zarr") as b:
        assert b.episode_ends.tolist() == a.episode_ends.tolist()
        original, restored = a.load(), b.load()
    assert sorted(restored) == sorted(original)
    for key, values in original.items():
        assert restored[key].dtype == values.dtype and restored[key].tobytes() == values.tobytes(), key


def test_exported_mcap_reads_with_the_mcap_reference_reader(tmp_path, lift_image_demo):
    """The MCAP file decodes with Foxglove's `mcap` reader and its ROS 2 decoder (the format's reference library,
    independent of rosbags): schemas in ros2msg, messages in CDR, the values robolearn wrote."""
    make_reader = pytest.importorskip("mcap.reader").make_reader
    decoder = pytest.importorskip("mcap_ros2.decoder").DecoderFactory
    bag = tmp_path / "bag"
    assert main(["dataset", "export", "format=rosbag", f"source={lift_image_demo}", f"output={bag}",
                 "rosbag.episodes=[1]"]) == 0
    with ReplayBuffer.open(lift_image_demo) as buffer:
        episode = buffer.get_episode(1)
    with open(bag / "bag.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[decoder()])
        assert {s.encoding for s in reader.get_summary().schemas.values()} == {"ros2msg"}
        states = [m for _, _, _, m in reader.iter_decoded_messages(topics=["/joint_states"])]
        f.seek(0)
        frames = [m for _, _, _, m in make_reader(f, decoder_factories=[decoder()]).iter_decoded_messages(
            topics=["/camera/front/image_raw"])]
    assert len(states) == len(episode["joint_pos"]) and states[0].name[0] == "shoulder_pan"
    np.testing.assert_array_equal(np.array([s.position for s in states], np.float32), episode["joint_pos"])
    assert frames[0].encoding == "rgb8"
    np.testing.assert_array_equal(np.frombuffer(bytes(frames[3].data), np.uint8).reshape(96, 96, 3),
                                  episode["front_image"][3])


def test_compressed_camera_topics_and_joint_trajectories_import(tmp_path):
    """sensor_msgs/CompressedImage (PNG here, so the pixels are exact) and trajectory_msgs/JointTrajectory commands,
    episodes split at a gap (no trigger topic in this bag)."""
    import cv2

    w = Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP)
    w.open()
    js = w.add_connection("/joint_states", "sensor_msgs/msg/JointState", typestore=STORE)
    cam = w.add_connection("/camera/wrist/image_raw/compressed", "sensor_msgs/msg/CompressedImage", typestore=STORE)
    traj = w.add_connection("/arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory", typestore=STORE)
    frames = {}
    for t in list(range(T0, T0 + S, S // 20)) + list(range(T0 + 3 * S, T0 + 4 * S, S // 20)):
        q = joint_pos_at(t)
        w.write(js, t, STORE.serialize_cdr(T["sensor_msgs/msg/JointState"](
            header=header(t), name=NAMES, position=q, velocity=np.zeros(0), effort=np.zeros(0)), js.msgtype))
        frames[t] = np.full((8, 8, 3), (t - T0) // (S // 20) % 256, np.uint8)
        png = np.frombuffer(cv2.imencode(".png", frames[t][..., ::-1])[1].tobytes(), np.uint8)
        w.write(cam, t, STORE.serialize_cdr(T["sensor_msgs/msg/CompressedImage"](
            header=header(t), format="png", data=png), cam.msgtype))
        point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=(q + 1)[[1, 0, 2]], velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
            time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=50_000_000))
        w.write(traj, t, STORE.serialize_cdr(T["trajectory_msgs/msg/JointTrajectory"](
            header=header(t), joint_names=["j1", "j0", "j2"], points=[point]), traj.msgtype))
    w.close()
    source = RosbagSource(tmp_path / "bag", rate_hz=20, joint_names=NAMES)
    assert source.topic_map["/camera/wrist/image_raw/compressed"] == "wrist_image"
    episodes = [data for _, data in source.episodes()]
    source.close()
    assert [len(e["joint_pos"]) for e in episodes] == [20, 20]
    np.testing.assert_allclose(episodes[1]["action"], episodes[1]["joint_pos"] + 1, atol=1e-6)
    np.testing.assert_array_equal(episodes[0]["wrist_image"][5], frames[T0 + 5 * (S // 20)])
