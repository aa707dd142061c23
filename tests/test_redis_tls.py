"""TLS: `tk redis harden --tls-*` gives a server that only speaks TLS, and tk still reaches it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import StartServer
from tests.helpers import ServerKind, require_all_servers, run_tk
from toolkit.redis import connect, credentials
from toolkit.redis.profile import TlsFiles


def _make_certs(d: Path) -> TlsFiles:
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=tk-test-ca")  # fmt: skip
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "s.csr",
        "-subj", "/CN=localhost")  # fmt: skip
    ssl("x509", "-req", "-in", "s.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "cert.pem", "-days", "2")  # fmt: skip
    return TlsFiles(d / "cert.pem", d / "key.pem", d / "ca.pem")


def test_tls_only_server(redis_factory: StartServer, tmp_path: Path) -> None:
    debian = Path("/usr/bin/redis-server")
    if not debian.exists() or shutil.which("openssl") is None:
        if require_all_servers():
            pytest.fail("Debian redis-server (built with TLS) and openssl are required")
        pytest.skip("needs Debian's redis-server (built with TLS) and openssl")
    certs = tmp_path / "certs"
    certs.mkdir()
    tls = _make_certs(certs)
    s = redis_factory(ServerKind("debian-redis", debian), tls=tls)
    creds = credentials.load(s.redis_conf_dir)
    assert creds is not None and creds.tls

    conf = (s.redis_conf_dir / "redis.conf").read_text()
    assert "\nport 0\n" in conf and f"\ntls-port {creds.port}\n" in conf

    client = connect.client(s, "tk-api")  # rediss:// with the CA from credentials.json
    assert client.ping()
    client.close()
    plain = redis.Redis(port=creds.port, socket_timeout=2, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()

    report = json.loads(run_tk(s.project_dir, "redis", "audit", "--json").output)
    by_id = {f["id"]: f for f in report["findings"]}
    assert by_id["tls-protocols"]["status"] == "ok"
    assert [f["id"] for f in report["findings"] if f["status"] == "fail"] == []
