"""Fixtures: the Azure emulator and an OpenBao dev server with the plugin, on loopback."""

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time

import hvac
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TARGET = os.path.join(ROOT, "target", os.environ.get("PLUGIN_PROFILE", "debug"))
BAO = os.path.join(ROOT, ".venv", "bin", "bao")
VERSION = "v" + next(
    line.split('"')[1] for line in open(os.path.join(ROOT, "Cargo.toml")) if line.startswith("version")
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="hvac-tests-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def emulator(workdir):
    proc = subprocess.Popen(
        [os.path.join(TARGET, "azure-emulator"), "--listen", "127.0.0.1:0",
         "--arc-token-dir", os.path.join(workdir, "arc")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    env = {}
    for line in proc.stdout:
        line = line.strip()
        if line == "READY":
            break
        key, _, value = line.partition("=")
        env[key] = value
    assert "AZURE_TENANT_ID" in env, "emulator did not start"
    yield env
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def bao(workdir, emulator):
    plugins = os.path.join(workdir, "plugins")
    os.makedirs(plugins)
    plugin = os.path.join(plugins, "azure")
    shutil.copy(os.path.join(TARGET, "vault-plugin-secrets-azure"), plugin)
    port = free_port()
    env = dict(os.environ)
    for key in ("AZURE_AUTHORITY_HOST", "AZURE_GRAPH_ENDPOINT", "AZURE_RESOURCE_MANAGER_ENDPOINT", "SSL_CERT_FILE"):
        env[key] = emulator[key]
    log = open(os.path.join(workdir, "bao.log"), "w")
    proc = subprocess.Popen(
        [BAO, "server", "-dev", "-dev-root-token-id=root", f"-dev-listen-address=127.0.0.1:{port}",
         f"-dev-plugin-dir={plugins}"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    client = hvac.Client(url=f"http://127.0.0.1:{port}", token="root")
    deadline = time.time() + 30
    while True:
        try:
            if client.sys.is_initialized():
                break
        except Exception:
            pass
        assert time.time() < deadline, "OpenBao did not start"
        time.sleep(0.1)
    sha = hashlib.sha256(open(plugin, "rb").read()).hexdigest()
    client.adapter.put("/v1/sys/plugins/catalog/secret/azure", json={"sha256": sha, "command": "azure", "version": VERSION})
    client.sys.enable_secrets_engine(backend_type="azure", path="azure")
    yield client
    proc.terminate()
    proc.wait(timeout=15)
    subprocess.run(["pkill", "-9", "-f", plugins + "/"], check=False)
