"""`robolearn train-value` end to end (Cal-QL and IQL, resume) and `robolearn eval value=... rerank.k=...`."""

import json

import pytest
from test_train_cli import TINY, run

TINY_Q = ["network.hidden=[32,32]", "training.batch_size=64", "training.log_every=5", "training.checkpoint_every=10",
          "n_action_steps=4", "threads=1"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A 4-episode mixed-quality dataset and a tiny policy trained on it."""
    root = tmp_path_factory.mktemp("value_cli")
    run("collect", "n_episodes=4", "task.expert.failure_rate=0.5", "task.expert.action_noise=0.01", f"output={root}/mixed.zarr", cwd=root)
    run("train", f"dataset={root}/mixed.zarr", f"run_dir={root}/policy", "training.steps=10", "eval.n_episodes=0",
        "eval.final_n_episodes=0", *TINY, cwd=root)
    return root


@pytest.mark.parametrize("algorithm", ["cal_ql", "iql"])
def test_train_value_resumes_and_reranks_in_eval(demo, algorithm, tmp_path):
    args = ["train-value", f"dataset={demo}/mixed.zarr", f"run_dir={tmp_path}/q", f"algorithm={algorithm}", *TINY_Q]
    out = run(*args, "training.steps=20", cwd=tmp_path).stdout
    assert "Q on the dataset" in out and "checkpoint:" in out
    latest = tmp_path / "q" / "checkpoints" / "latest"
    assert json.loads((latest / "train_state.json").read_text())["counters"]["step"] == 20
    assert (latest / "target.safetensors").is_file() and list((tmp_path / "q" / "tb").glob("events.*"))
    out = run(*args, "training.steps=30", cwd=tmp_path).stdout
    assert "resumed from" in out and "at step 20" in out
    assert json.loads((latest / "train_state.json").read_text())["counters"]["step"] == 30

    ev = run("eval", f"checkpoint={demo}/policy/checkpoints/latest", f"value={latest}", "rerank.k=4", "n_episodes=2",
             "n_video=0", "num_inference_steps=3", f"output_dir={tmp_path}/ev", cwd=tmp_path)
    assert "success" in ev.stdout
    results = json.loads((tmp_path / "ev" / "eval_results.json").read_text())
    assert results["policy_class"] == "ValueGuidedPolicy" and results["rerank"]["k"] == 4
    assert results["n_episodes"] == 2


def test_eval_with_a_mismatched_q_function_is_a_clear_error(demo, tmp_path):
    # the policy executes 4-action chunks; this Q-function scores 8-action chunks
    run("train-value", f"dataset={demo}/mixed.zarr", f"run_dir={tmp_path}/q", "training.steps=2",
        *[o for o in TINY_Q if not o.startswith("n_action_steps")], cwd=tmp_path)
    proc = run("eval", f"checkpoint={demo}/policy/checkpoints/latest", f"value={tmp_path}/q/checkpoints/latest",
               "n_episodes=1", "n_video=0", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "n_action_steps: the Q-function scores chunks of 8 actions, the policy executes 4" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["reward.convention=dense"], "reward.convention must be one of"),
    (["algorithm=sac"], "algorithm must be cal_ql or iql"),
    (["dataset=missing.zarr"], "missing.zarr"),
])
def test_train_value_bad_input_is_a_clear_error(tmp_path, args, message):
    proc = run("train-value", f"run_dir={tmp_path}/q", *args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
