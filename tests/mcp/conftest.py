"""MCP endpoints for the tests, each driven by the official Python MCP SDK as a real client:

- `stdio`: `cellos mcp` started by the client, speaking on its stdin/stdout;
- `http`: `cellos mcp --http 127.0.0.1:PORT`, streamable HTTP with a bearer token;
- `serve`: `/mcp` on `cellos serve`, over its loopback TCP listener with its bearer token
  (test_tools.py also drives it over the Unix socket, where the peer's uid is the caller).

Each has a CELLOS_HOME of its own whose event log the tests read, the profiles of
`internet.Internet.profiles`, and the test internet's dnsmasq as DNS upstream.
"""
import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time

import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from internet import Internet

ROOT = pathlib.Path(__file__).resolve().parents[2]
CELLOS = os.environ.get("CELLOS_BIN", str(ROOT / "target" / "x86_64-unknown-linux-gnu" / "debug" / "cellos"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def internet():
    net = Internet()
    yield net
    net.close()


@pytest.fixture(scope="session")
def profiles(internet, tmp_path_factory):
    return internet.profiles(tmp_path_factory.mktemp("profiles") / "profiles.yaml")


class Endpoint:
    """One way of reaching the MCP server, and the CELLOS_HOME its cells are recorded in."""

    def __init__(self, name, home):
        self.name, self.home = name, home
        self.proc = None

    def events(self, type_suffix=None):
        lines = (self.home / "events.jsonl").read_text().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        if type_suffix:
            events = [e for e in events if e["type"].endswith(type_suffix)]
        return events

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)


class Stdio(Endpoint):
    def __init__(self, home, argv):
        super().__init__("stdio", home)
        self.argv = argv

    @contextlib.asynccontextmanager
    async def connect(self):
        params = StdioServerParameters(command=self.argv[0], args=self.argv[1:])
        with open(self.home / "mcp-stdio.log", "ab") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    yield session


class Http(Endpoint):
    def __init__(self, name, home, url, client):
        super().__init__(name, home)
        self.url, self.client = url, client

    @contextlib.asynccontextmanager
    async def connect(self):
        async with self.client() as http:
            async with streamable_http_client(self.url, http_client=http) as (read, write, _):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    yield session


def wait_until(ready, proc, log, what):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: " + log.read_text())
        try:
            if ready():
                return
        except (OSError, httpx.TransportError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer in 30 s: " + log.read_text())


def server_flags(internet, pool):
    return ["--dns-upstream", internet.dns, "--net-pool", pool]


def mcp_timeout():
    return httpx.Timeout(30.0, read=300.0)


@pytest.fixture(scope="session")
def stdio_endpoint(profiles, internet):
    home = pathlib.Path(tempfile.mkdtemp(prefix="cellos-mcp-stdio-"))
    argv = [CELLOS, "--home", str(home), "mcp", "--profiles", str(profiles),
            *server_flags(internet, "10.216.0.0/16")]
    yield Stdio(home, argv)


@pytest.fixture(scope="session")
def http_endpoint(profiles, internet):
    home = pathlib.Path(tempfile.mkdtemp(prefix="cellos-mcp-http-"))
    token = "mcp-" + os.urandom(12).hex()
    (home / "token").write_text(token + "\n")
    port = free_port()
    log = home / "mcp-http.log"
    proc = subprocess.Popen([CELLOS, "--home", str(home), "mcp", "--http", f"127.0.0.1:{port}",
                             "--token-file", str(home / "token"), "--profiles", str(profiles),
                             *server_flags(internet, "10.217.0.0/16")],
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"))
    url = f"http://127.0.0.1:{port}/mcp"
    endpoint = Http("http", home, url, lambda: httpx.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=mcp_timeout()))
    endpoint.proc, endpoint.token = proc, token
    wait_until(lambda: httpx.post(url, timeout=1).status_code == 401, proc, log, "cellos mcp --http")
    yield endpoint
    endpoint.stop()


@pytest.fixture(scope="session")
def serve_endpoint(profiles, internet):
    home = pathlib.Path(tempfile.mkdtemp(prefix="cellos-mcp-serve-"))
    token = "serve-" + os.urandom(12).hex()
    (home / "token").write_text(token + "\n")
    port = free_port()
    log = home / "serve.log"
    proc = subprocess.Popen([CELLOS, "--home", str(home), "serve", "--listen", f"tcp:127.0.0.1:{port}",
                             "--token-file", str(home / "token"), "--mcp-profiles", str(profiles),
                             *server_flags(internet, "10.218.0.0/16")],
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"))
    sock = str(home / "cellos.sock")
    endpoint = Http("serve", home, f"http://127.0.0.1:{port}/mcp", lambda: httpx.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=mcp_timeout()))
    endpoint.proc, endpoint.token, endpoint.sock = proc, token, sock
    ready = lambda: httpx.Client(transport=httpx.HTTPTransport(uds=sock)).get("http://localhost/healthz").status_code == 200
    wait_until(ready, proc, log, "cellos serve")
    yield endpoint
    endpoint.stop()


@pytest.fixture(params=["stdio", "http", "serve"])
def endpoint(request):
    return request.getfixturevalue(f"{request.param}_endpoint")
