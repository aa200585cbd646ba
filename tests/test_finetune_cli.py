"""`robolearn finetune` end to end on a tiny config: DPPO and the Gaussian baseline, resume, eval."""

import json

import torch
from safetensors.torch import load_file
from test_train_cli import TINY, run

# 0.5 s episodes (10 env steps), so episodes end, are reset and bootstrapped within an iteration
TINY_FT = ["task.env_kwargs.max_episode_seconds=0.5", "ppo.n_envs=2", "ppo.n_steps=4", "ppo.minibatch_size=16", "ppo.update_epochs=1",
           "ppo.critic_hidden=[16]", "ppo.critic_warmup_iters=1", "eval.every=1", "eval.n_episodes=1",
           "eval.final_n_episodes=1", "eval.n_video=0", "threads=1"]


def test_dppo_finetune_resumes_and_loads_in_eval(tmp_path):
    pre = ["train", f"dataset={tmp_path}/demo.zarr", f"run_dir={tmp_path}/pre", "policy=diffusion_unet_ddpm20",
           "training.steps=20", "eval.n_episodes=0", "eval.final_n_episodes=1", "eval.n_video=0",
           *[o for o in TINY if not o.startswith(("policy.horizon", "policy.n_action_steps", "eval."))]]
    run(*pre, cwd=tmp_path)
    ckpt = tmp_path / "pre" / "checkpoints" / "latest"
    ft = ["finetune", f"checkpoint={ckpt}", f"run_dir={tmp_path}/ft", "policy.ft_denoising_steps=3", *TINY_FT]
    out = run(*ft, "ppo.iterations=2", cwd=tmp_path).stdout
    assert "success" in out
    latest = tmp_path / "ft" / "checkpoints" / "latest"
    raw, averaged = (load_file(latest / f"{name}.safetensors") for name in ("ft_model", "ft_ema"))
    assert all(torch.equal(raw[k], averaged[k]) for k in raw)  # the first update of the average copies
    curve = json.loads((tmp_path / "ft" / "curve.json").read_text())
    assert [c["iteration"] for c in curve] == [0, 1, 2] and curve[-1]["env_steps"] > 0

    out = run(*ft, "ppo.iterations=3", cwd=tmp_path).stdout
    assert "at iteration 2" in out and "resumed from" in out
    state = json.loads((latest / "train_state.json").read_text())["counters"]
    assert state["iteration"] == 3 and state["ema_step"] == 2  # one critic warm-up iteration, two actor updates
    # then the average (evaluated, deployed) lags the online weights, restored on resume and updated after it
    raw, averaged = (load_file(latest / f"{name}.safetensors") for name in ("ft_model", "ft_ema"))
    assert any(not torch.equal(raw[k], averaged[k]) for k in raw)

    ev = run("eval", f"checkpoint={latest}", "n_episodes=1", "n_video=0", f"output_dir={tmp_path}/ev", cwd=tmp_path)
    assert "success" in ev.stdout
    assert json.loads((tmp_path / "ev" / "eval_results.json").read_text())["policy_class"] == "DiffusionPolicy"


def test_gaussian_baseline_pretrains_by_bc_and_finetunes(tmp_path):
    run("collect", "n_episodes=3", f"output={tmp_path}/demo.zarr", cwd=tmp_path)
    out = run("finetune", "policy=gaussian", f"dataset={tmp_path}/demo.zarr", f"run_dir={tmp_path}/g",
              "policy.bc_steps=20", "policy.hidden=[32]", "ppo.iterations=1", *TINY_FT, cwd=tmp_path).stdout
    assert "success" in out
    ev = run("eval", f"checkpoint={tmp_path}/g/checkpoints/latest", "n_episodes=1", "n_video=0",
             f"output_dir={tmp_path}/ev", cwd=tmp_path)
    assert "success" in ev.stdout
    assert json.loads((tmp_path / "ev" / "eval_results.json").read_text())["policy_class"] == "GaussianChunkPolicy"
    # resumes (the online weights, and the average with its step); eval.final_n_episodes=0 skips the test
    out = run("finetune", "policy=gaussian", f"dataset={tmp_path}/demo.zarr", f"run_dir={tmp_path}/g",
              "policy.hidden=[32]", "ppo.iterations=2", "eval.final_n_episodes=0",
              *[o for o in TINY_FT if not o.startswith("eval.final_n_episodes")], cwd=tmp_path).stdout
    assert "resumed from" in out and "no test evaluation" in out
    state_path = tmp_path / "g" / "checkpoints" / "latest" / "train_state.json"
    state = json.loads(state_path.read_text())["counters"]
    assert state["ema_step"] == 1
    # a run written by an older robolearn (its train state without the format: flat counters) is a clear
    # error, and its checkpoint stays
    state_path.write_text(json.dumps({k: v for k, v in state.items() if k != "ema_step"}))
    proc = run("finetune", "policy=gaussian", f"dataset={tmp_path}/demo.zarr", f"run_dir={tmp_path}/g",
               "policy.hidden=[32]", "ppo.iterations=3", *TINY_FT, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "written by an older robolearn and cannot be resumed" in proc.stderr
    assert json.loads(state_path.read_text())["iteration"] == 2


def test_finetune_without_a_checkpoint_is_a_clear_error(tmp_path):
    proc = run("finetune", f"run_dir={tmp_path}/x", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "give the pretrained Diffusion Policy" in proc.stderr
