"""The am_rl reward service: scores responses (math, code, IFEval, reward model) behind a Redis job queue.

    python -m reward_server --host 127.0.0.1 --port PORT [--redis-url URL] [--workers N]
    python -m reward_server.worker        # more workers, on any machine that reaches $AM_RL_REWARD_REDIS_URL

HTTP (auth.py's key, app.py's body cap, routes.py with limits.py) -> Broker (cache, dedup, enqueue, wait; broker.py)
-> Redis -> Worker (worker.py) -> Executor (hard-killable verifier process; executor.py) -> verifiers/ (math,
code + sandbox.py, ifeval, rm). Wire types live in types.py; worker knobs in config.py, input limits in limits.py.
"""
