"""recipes/slurm: every script parses (bash -n), and dry runs with simulated Slurm commands (srun, sbatch, scontrol,
curl, python on PATH, each recording what it was given) bring up the right components with the right arguments,
hand the API keys, the Redis password and Ray's token to the steps in their environment only (never a command line
or a log), and tear everything down when the batch script gets scancel's TERM. The same scripts run for real on a
two-node Slurm cluster in test_slurm_cluster.py; these check argument details for 4 GPU nodes."""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SLURM = REPO / "recipes" / "slurm"
SCRIPTS = sorted(p for p in SLURM.iterdir() if p.suffix in (".sh", ".sbatch"))

# Each simulated command appends {"cmd": name, "argv": [...]} to $FAKE_LOG; srun adds the secrets its step inherits
# ("env"). srun prints an IP for the node-IP probe, and with FAKE_BLOCK=1 keeps "long-running" steps alive until TERM,
# which it records.
FAKE_SRUN = r"""#!/bin/bash
node=""; args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [[ ${args[i]} == -w ]] && node=${args[i+1]}; done
if [[ ${FAKE_BLOCK:-0} == 1 ]]; then  # before anything else: a TERM may come as soon as the step is recorded
    trap 'echo "{\"cmd\": \"TERM\", \"argv\": [\"$node\", \"$*\"]}" >> "$FAKE_LOG"; ${sleeper:+kill $sleeper}; exit 143' TERM
fi
python3 - "$@" <<'PY'
import json, os, sys
env = {k: os.environ.get(k) for k in ("AM_RL_REWARD_API_KEY", "AM_RL_REWARD_REDIS_URL", "AM_RL_BALANCER_API_KEY",
                                     "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({"cmd": "srun", "argv": sys.argv[1:], "env": env}) + "\n")
PY
if [[ "$*" == *getsockname* ]]; then echo "10.0.0.${node#node}"; exit 0; fi
if [[ ${FAKE_BLOCK:-0} == 1 ]]; then
    sleep 300 &
    sleeper=$!
    wait
fi
"""
FAKE_SCONTROL = """#!/bin/bash
[[ $1 == show && $2 == hostnames ]] || exit 2
for i in $(seq "$FAKE_NODES"); do echo "node$i"; done
"""
FAKE_SBATCH = r"""#!/bin/bash
python3 - "$@" <<'PY'
import json, os, sys
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps({"cmd": "sbatch", "argv": sys.argv[1:]}) + "\n")
PY
n=$(grep -c '"sbatch"' "$FAKE_LOG"); echo $((1000 + n))
"""
FAKE_OK = """#!/bin/bash
exit 0
"""
# python: `ray status` sees every node; the recipe's balancer processes and flags; anything else (the Redis ping)
# succeeds.
FAKE_PYTHON = """#!/bin/bash
case "$*" in
    *"ray.scripts.scripts status"*) echo Active:; for i in $(seq "$FAKE_NODES"); do echo " 1 node_$i"; done ;;
    *am_rl.trainer.balancer_args*) printf '%s\\n' "${FAKE_LB_PROCESSES:-1}" --policy makespan --migrate ;;
esac
"""


def test_every_script_parses():
    assert {p.name for p in SCRIPTS} >= {"lib.sh", "train.sbatch", "reward.sbatch", "launch.sh"}
    for script in SCRIPTS:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, (script.name, result.stderr)


@pytest.fixture
def fake_slurm(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"srun": FAKE_SRUN, "scontrol": FAKE_SCONTROL, "sbatch": FAKE_SBATCH, "curl": FAKE_OK,
                       "python": FAKE_PYTHON}.items():  # fmt: skip
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.touch()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "FAKE_NODES": "4",
        "SLURM_JOB_NODELIST": "node[1-4]",
        "SLURM_JOB_ID": "77",
        "SLURM_CPUS_ON_NODE": "64",
        "SLURM_GPUS_ON_NODE": "8",
        "AM_RL_LOG_DIR": str(tmp_path / "logs"),
        "AM_RL_SLURM_DIR": str(SLURM),
        "AM_RL_PYTHON": "python",
        "AM_RL_REDIS_SERVER": "/opt/redis/redis-server",
    }
    for name in ("AM_RL_REWARD_URL", "AM_RL_REWARD_API_KEY", "AM_RL_REWARD_API_KEY_FILE", "AM_RL_REWARD_REDIS_URL",
                 "AM_RL_BALANCER_API_KEY", "AM_RL_BALANCER_API_KEY_FILE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        env.pop(name, None)

    def calls(cmd: str = "srun") -> list[list[str]]:
        return [c["argv"] for c in map(json.loads, log.read_text().splitlines()) if c["cmd"] == cmd]

    return env, calls, tmp_path


def step_env(tmp: Path, name: str) -> dict:
    """The secrets the step logging to NAME.log inherited."""
    for c in map(json.loads, (tmp / "calls.jsonl").read_text().splitlines()):
        if c["cmd"] == "srun" and any(a.endswith(f"/{name}.log") and a.startswith("--output=") for a in c["argv"]):
            return c["env"]
    raise KeyError(name)


def steps(calls) -> dict[str, list[str]]:
    """The background component steps by log name: {"ray_head": argv, ...}."""
    found = {}
    for argv in calls("srun"):
        out = next((a for a in argv if a.startswith("--output=")), None)
        if out:
            found[Path(out.split("=", 1)[1]).stem] = argv
    return found


def node_of(argv: list[str]) -> str:
    return argv[argv.index("-w") + 1]


def test_train_dry_run_brings_up_ray_rewards_balancer_and_trainer(fake_slurm):
    env, calls, tmp = fake_slurm
    env["AM_RL_RECIPE"] = "stage1_32b"
    result = subprocess.run(["bash", str(SLURM / "train.sbatch"), "trainer.total_training_steps=5"], env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    s = steps(calls)
    assert set(s) == {"ray_head", "ray_worker_node2", "ray_worker_node3", "ray_worker_node4", "redis", "reward_api",
                      "reward_workers_node1", "balancer", "trainer"}  # fmt: skip
    head = s["ray_head"]
    assert node_of(head) == "node1" and "--head" in head and "--node-ip-address=10.0.0.1" in head
    assert "--port=6380" in head and "--num-gpus=8" in head
    for n in (2, 3, 4):
        worker = s[f"ray_worker_node{n}"]
        assert node_of(worker) == f"node{n}" and "--address=10.0.0.1:6380" in worker and "--block" in worker
    redis = s["redis"]
    conf = tmp / "logs" / "redis.conf"
    assert redis[redis.index("/opt/redis/redis-server") + 1 :][:5] == [str(conf), "--port", "6379", "--bind", "0.0.0.0"]
    api = s["reward_api"]
    assert "--redis-url" not in api and api[api.index("--port") + 1] == "8200"
    lb = s["balancer"]
    assert node_of(lb) == "node1" and lb[lb.index("-m") + 1] == "load_balancer"
    assert lb[lb.index("--host") + 1] == "0.0.0.0" and lb[lb.index("--port") + 1] == "8100"
    assert lb[-3:] == ["--policy", "makespan", "--migrate"]  # the recipe's settings (am_rl.trainer.balancer_args)
    trainer = s["trainer"]
    assert node_of(trainer) == "node1"
    args = trainer[trainer.index("am_rl.main_grpo") + 1 :]
    assert args == ["--config-name", "stage1_32b", "trainer.nnodes=4", "trainer.n_gpus_per_node=8",
                    "ray_kwargs.ray_init.num_cpus=null", "ray_kwargs.ray_init.num_gpus=null",
                    "am_rl.balancer.url='http://10.0.0.1:8100'", "am_rl.reward.url=http://10.0.0.1:8200",
                    "trainer.total_training_steps=5"]  # fmt: skip
    # Every step states its resources and shares its node with the job's other steps.
    for argv in s.values():
        assert {"--nodes=1", "--ntasks=1", "--overlap", "--mem=0"} <= set(argv[: argv.index("--kill-on-bad-exit=1")])
        assert "--cpus-per-task=64" in argv  # every CPU of the node: one step must not confine Ray to one core
    # The node's GPUs go to Ray's nodes and the trainer only.
    assert {name for name, argv in s.items() if "--gres=gpu:8" in argv} == {
        "ray_head", "ray_worker_node2", "ray_worker_node3", "ray_worker_node4", "trainer"}
    # Order (the script's own log, in launch order): Ray, rewards and balancer all up before the trainer.
    order = re.findall(r"start (\S+) on node", result.stderr)
    assert order.index("ray_head") < order.index("balancer") < order.index("trainer")
    assert order.index("reward_api") < order.index("trainer")
    assert (tmp / "logs").is_dir()


def test_a_recipe_with_several_balancer_processes_gets_that_many_shards(fake_slurm):
    env, calls, _ = fake_slurm
    env["AM_RL_RECIPE"], env["FAKE_LB_PROCESSES"] = "stage1_32b", "3"
    result = subprocess.run(["bash", str(SLURM / "train.sbatch")], env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    s = steps(calls)
    assert "balancer" not in s
    urls = [f"http://10.0.0.1:{8099 + i}" for i in (1, 2, 3)]
    for i in (1, 2, 3):
        lb = s[f"balancer_shard{i}"]
        peers = [flag for url in urls if url != urls[i - 1] for flag in ("--peer", url)]  # for /dashboard?view=all
        assert lb[lb.index("--port") + 1] == str(8099 + i) and lb[-9:] == [
            "--policy", "makespan", "--migrate", "--shard", f"{i}/3", *peers]  # fmt: skip
    assert f"am_rl.balancer.url='{','.join(urls)}'" in s["trainer"]  # quoted: Hydra reads an unquoted comma as a sweep


def test_train_uses_a_given_reward_service(fake_slurm):
    env, calls, _ = fake_slurm
    env["AM_RL_REWARD_URL"] = "http://cpu7:8200"
    result = subprocess.run(["bash", str(SLURM / "train.sbatch")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    s = steps(calls)
    assert "reward_api" not in s and "redis" not in s
    assert "am_rl.reward.url=http://cpu7:8200" in s["trainer"]


def test_reward_job_starts_redis_api_and_workers_and_writes_its_url(fake_slurm):
    """...and serves until the training job (its id in AM_RL_TRAIN_JOB_FILE) has ended, then completes."""
    env, calls, tmp = fake_slurm
    env["FAKE_NODES"] = "2"
    env["FAKE_BLOCK"] = "1"  # the service's steps run until teardown
    url_file = tmp / "reward_url"
    env["AM_RL_REWARD_URL_FILE"] = str(url_file)
    (tmp / "train_job_id").write_text("1002\n")
    env["AM_RL_TRAIN_JOB_FILE"] = str(tmp / "train_job_id")
    state = tmp / "train_state"
    state.write_text("RUNNING\n")
    squeue = tmp / "bin" / "squeue"  # the training job's state, as the test sets it
    squeue.write_text(f'#!/bin/bash\n[[ "$*" == *--jobs=1002* ]] && cat {state}\n')
    squeue.chmod(0o755)
    proc = subprocess.Popen(["bash", str(SLURM / "reward.sbatch")], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not url_file.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.2)
    time.sleep(12)  # the watch polls every 10 s: the job keeps serving while training runs
    assert proc.poll() is None
    state.write_text("COMPLETED\n")
    assert proc.wait(timeout=30) == 0
    stderr = proc.stderr.read()
    assert "the training job has ended: stopping the reward service" in stderr
    assert len(calls("TERM")) == 4  # every step stopped
    s = steps(calls)
    assert set(s) == {"redis", "reward_api", "reward_workers_node1", "reward_workers_node2"}
    assert "python -m reward_server.worker &" in s["reward_workers_node2"][-1]
    assert url_file.read_text().strip() == "http://10.0.0.1:8200"
    key_file = tmp / "logs" / "reward_api_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert step_env(tmp, "reward_api")["AM_RL_REWARD_API_KEY"] == key_file.read_text()
    assert str(key_file) in stderr  # where to find it is logged; the key is not (test_secrets_...)


def test_launch_submits_reward_then_dependent_train_job(fake_slurm):
    env, calls, tmp = fake_slurm
    result = subprocess.run(["bash", str(SLURM / "launch.sh"), "stage2_32b", "trainer.save_freq=5"], env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    reward, train = calls("sbatch")
    assert reward[-1].endswith("reward.sbatch") and "--parsable" in reward
    assert train[-2:] == [str(SLURM / "train.sbatch"), "trainer.save_freq=5"]
    assert "--dependency=after:1001" in train
    export = next(a for a in train if a.startswith("--export="))
    assert "AM_RL_RECIPE=stage2_32b" in export and "AM_RL_REWARD_URL_FILE=" in export
    assert "reward job 1001, train job 1002" in result.stdout
    # One key for both jobs: a 0600 file made here, its path (not the key) handed to both.
    key_file = Path(next(a for a in export.split(",") if a.startswith("AM_RL_REWARD_API_KEY_FILE=")).split("=", 1)[1])
    assert f"AM_RL_REWARD_API_KEY_FILE={key_file}" in next(a for a in reward if a.startswith("--export="))
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_text()) == 64
    assert key_file.read_text() not in result.stdout + result.stderr + json.dumps(calls("sbatch"))


def test_scancel_term_tears_every_component_down(fake_slurm):
    env, calls, _ = fake_slurm
    env["FAKE_BLOCK"] = "1"  # every step runs until it is signalled, the trainer too
    proc = subprocess.Popen(["bash", str(SLURM / "train.sbatch")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while "trainer" not in steps(calls):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)  # scancel: TERM to the batch script
    proc.wait(timeout=60)
    assert proc.returncode != 0
    stopped = {argv[0] for argv in calls("TERM")}
    components = steps(calls)
    assert len(calls("TERM")) == len(components), (calls("TERM"), list(components))
    assert stopped == {"node1", "node2", "node3", "node4"}


def test_secrets_reach_the_steps_in_their_environment_only(fake_slurm):
    """The API key and the Redis password: in the steps' environment (the trainer's too, so Ray's processes inherit
    the key), in 0600 files, and in no command line nor any log the job writes."""
    env, calls, tmp = fake_slurm
    result = subprocess.run(["bash", str(SLURM / "train.sbatch")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    key = (tmp / "logs" / "reward_api_key").read_text()
    redis_url = step_env(tmp, "reward_api")["AM_RL_REWARD_REDIS_URL"]
    password = redis_url.split("://:", 1)[1].split("@", 1)[0]
    assert len(key) == 64 and len(password) == 64 and redis_url.endswith("@10.0.0.1:6379/0")
    assert step_env(tmp, "reward_api")["AM_RL_REWARD_API_KEY"] == key
    assert step_env(tmp, "ray_head")["AM_RL_REWARD_API_KEY"] == key  # Ray starts after the key is exported
    assert step_env(tmp, "trainer")["AM_RL_REWARD_API_KEY"] == key
    assert step_env(tmp, "reward_workers_node1")["AM_RL_REWARD_REDIS_URL"] == redis_url
    assert "unset AM_RL_REWARD_API_KEY" in steps(calls)["reward_workers_node1"][-1]  # workers need Redis only
    conf = tmp / "logs" / "redis.conf"
    assert conf.read_text() == f"requirepass {password}\n" and conf.stat().st_mode & 0o777 == 0o600
    # The balancer's key: one name (AM_RL_BALANCER_API_KEY) for the balancer and for every Ray process (the trainer).
    lb_key_file = tmp / "logs" / "balancer_api_key"
    lb_key = lb_key_file.read_text()
    assert len(lb_key) == 64 and lb_key_file.stat().st_mode & 0o777 == 0o600 and lb_key != key
    assert step_env(tmp, "balancer")["AM_RL_BALANCER_API_KEY"] == lb_key
    assert step_env(tmp, "ray_head")["AM_RL_BALANCER_API_KEY"] == lb_key
    assert step_env(tmp, "ray_worker_node2")["AM_RL_BALANCER_API_KEY"] == lb_key
    assert step_env(tmp, "trainer")["AM_RL_BALANCER_API_KEY"] == lb_key
    # Ray's token authentication: every Ray step holds the token file's path, the file holds the token.
    token_file = tmp / "logs" / "ray_auth_token"
    token = token_file.read_text()
    assert len(token) == 64 and token_file.stat().st_mode & 0o777 == 0o600
    for name in ("ray_head", "ray_worker_node3", "trainer"):
        assert step_env(tmp, name)["RAY_AUTH_MODE"] == "token"
        assert step_env(tmp, name)["RAY_AUTH_TOKEN_PATH"] == str(token_file)
    secret_files = ("reward_api_key", "redis.conf", "balancer_api_key", "ray_auth_token")
    written = [result.stdout, result.stderr, json.dumps(calls("srun")), json.dumps(calls("sbatch"))]
    written += [p.read_text() for p in (tmp / "logs").iterdir() if p.name not in secret_files]
    for secret in (key, password, lb_key, token):
        assert not [w for w in written if secret in w]


def test_given_key_is_used_and_no_file_is_made(fake_slurm):
    env, _, tmp = fake_slurm
    env["AM_RL_REWARD_API_KEY"] = "k" * 40
    result = subprocess.run(["bash", str(SLURM / "train.sbatch")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert step_env(tmp, "trainer")["AM_RL_REWARD_API_KEY"] == "k" * 40
    assert not (tmp / "logs" / "reward_api_key").exists()
