"""A real `cellos serve` for the API tests: started on a Unix socket and on TLS over loopback
(self-signed certificate, bearer token), in a fresh CELLOS_HOME, and stopped (SIGTERM) after.
"""
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time

import httpx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CELLOS = os.environ.get("CELLOS_BIN", str(ROOT / "target" / "x86_64-unknown-linux-gnu" / "debug" / "cellos"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, home, sock, port, token, cert):
        self.home, self.sock, self.port, self.token, self.cert = home, sock, port, token, cert
        self.proc = None

    def start(self, tcp=True):
        argv = [CELLOS, "--home", str(self.home), "serve"]
        if tcp:
            argv += ["--listen", f"tcp:127.0.0.1:{self.port}",
                     "--tls-cert", str(self.cert[0]), "--tls-key", str(self.cert[1]),
                     "--token-file", str(self.home / "token")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=open(self.home / "serve.log", "ab"))
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if self.unix().get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("cellos serve exited: " + (self.home / "serve.log").read_text())
            time.sleep(0.1)
        raise RuntimeError("cellos serve did not answer in 30 s")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=300)

    def unix(self, timeout=60.0):
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.sock)),
                            base_url="http://cellos", timeout=timeout)


@pytest.fixture(scope="session")
def server():
    home = pathlib.Path(tempfile.mkdtemp(prefix="cellos-api-"))
    token = "t0k3n-" + os.urandom(8).hex()
    (home / "token").write_text(token + "\n")
    cert, key = home / "cert.pem", home / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    srv = Server(home, home / "cellos.sock", free_port(), token, (cert, key))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def api(server):
    with server.unix() as client:
        yield client


_n = [0]


def session_spec(name, extra=""):
    _n[0] += 1
    return f"""apiVersion: cellos.io/v1
kind: ExecutionCell
spec:
  id: {name}-{os.getpid()}-{_n[0]}
  filesystem:
    workspace:
      target: /work
  limits:
    pidsMax: 256
{extra}"""
