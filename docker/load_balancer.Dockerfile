# The load balancer (python -m load_balancer): a small CPU image. Only the balancer's own dependencies are installed,
# at the versions of requirements/cpu.lock (the set CI tests), not the trainer's stack (verl, Ray, torch).
# Build from the repository root:  docker build -f docker/load_balancer.Dockerfile -t am_rl/load_balancer .
FROM python:3.11-slim-bookworm

RUN useradd --create-home --uid 10001 balancer
WORKDIR /opt/am_rl
COPY requirements/cpu.lock requirements/cpu.lock
COPY setup.py ./
COPY load_balancer load_balancer
RUN pip install --no-cache-dir --no-deps . \
    && pip install --no-cache-dir -c requirements/cpu.lock \
        fastapi starlette "uvicorn[standard]" aiohttp pydantic prometheus-client redis orjson numpy

USER balancer
EXPOSE 8000
ENTRYPOINT ["python", "-m", "load_balancer", "--host", "0.0.0.0"]
CMD ["--port", "8000"]
