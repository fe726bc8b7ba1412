"""A small test internet in a network namespace of its own, as crates/cellos/tests/egress
builds one: a veth pair to the host, routes to 198.19.N.0/24 through it, dnsmasq at
198.19.N.53 and an HTTP server on port 80 of two names:

    alpha.example -> 198.19.N.10        gamma.example -> 198.19.N.20

The index N is claimed by creating the namespace `cellos-egi-N`, which fails while another
test (Rust or Python, any process) holds it; close() kills the servers and removes the veth
pair, its routes and the namespace.
"""
import os
import pathlib
import random
import socket
import subprocess
import tempfile
import time

ALPHA = "alpha.example"
GAMMA = "gamma.example"
BODY = "hello from the test internet\n"


def ip(*args, check=True):
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out.returncode == 0


def dns_a(server, name, timeout=0.5):
    """The first A record dnsmasq at `server` answers for `name` (a minimal DNS query)."""
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(query, (server, 53))
        answer = s.recv(512)
    if len(answer) < 4 or answer[3] & 0x0F != 0 or answer[6:8] == b"\x00\x00":
        return None
    return ".".join(str(b) for b in answer[-4:])


class Internet:
    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="cellos-mcp-internet-"))
        self.procs = []
        self.index = self._claim()
        self.netns = f"cellos-egi-{self.index}"
        self.host_if = f"egi{self.index}"
        try:
            self._wire()
            self._serve()
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _claim(self):
        start = random.randrange(256)
        for step in range(256):
            n = (start + step) % 256
            if ip("netns", "add", f"cellos-egi-{n}", check=False):
                return n
        raise RuntimeError("no free test internet index: 256 namespaces cellos-egi-* exist")

    def addr(self, host):
        return f"198.19.{self.index}.{host}"

    @property
    def dns(self):
        return f"{self.addr(53)}:53"

    @property
    def alpha(self):
        return self.addr(10)

    @property
    def gamma(self):
        return self.addr(20)

    def _wire(self):
        n, ns, hif = self.index, self.netns, self.host_if
        ip("link", "add", hif, "type", "veth", "peer", "name", "up0", "netns", ns)
        ip("addr", "add", f"198.18.{n}.1/24", "dev", hif)
        ip("link", "set", hif, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "addr", "add", f"198.18.{n}.2/24", "dev", "up0")
        ip("-n", ns, "link", "set", "up0", "up")
        ip("-n", ns, "route", "add", "default", "via", f"198.18.{n}.1")
        for host in (53, 10, 20):
            ip("-n", ns, "addr", "add", f"{self.addr(host)}/32", "dev", "lo")
        ip("route", "add", f"198.19.{n}.0/24", "via", f"198.18.{n}.2")

    def _spawn(self, *argv):
        self.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def _serve(self):
        www = self.dir / "www"
        www.mkdir()
        (www / "hello.txt").write_text(BODY)
        self._spawn("dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                    "--no-hosts", "--bind-interfaces", f"--listen-address={self.addr(53)}",
                    "--port=53", "--user=root", "--pid-file=", "--local-ttl=30",
                    f"--address=/{ALPHA}/{self.alpha}", f"--address=/{GAMMA}/{self.gamma}")
        self._spawn("python3", "-m", "http.server", "80", "--bind", "0.0.0.0",
                    "--directory", str(www))

    def _wait_ready(self):
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                with socket.create_connection((self.alpha, 80), timeout=0.5):
                    pass
                if dns_a(self.addr(53), ALPHA) == self.alpha:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the test internet in {self.netns} did not come up")

    def close(self):
        for proc in self.procs:
            proc.kill()
            proc.wait()
        ip("link", "del", self.host_if, check=False)
        ip("netns", "delete", self.netns, check=False)

    def profiles(self, path):
        """A profiles file with the built-in `python` profile and `web`, which may reach both
        names of this internet on port 80."""
        path.write_text(f"""\
profiles:
  python:
    description: python3 on the host rootfs, no network, 512 MiB, 5 minutes
    maxExecTimeoutMs: 300000
    spec:
      lifetime: {{ttlSeconds: 300, idleTimeoutSeconds: 300}}
      limits: {{memoryMaxBytes: 512Mi, pidsMax: 256}}
      filesystem: {{rootfs: host, workspace: {{target: /work, sizeBytes: 64Mi}}}}
  web:
    description: python3 that may fetch from {ALPHA} and {GAMMA} over HTTP
    maxExecTimeoutMs: 60000
    spec:
      lifetime: {{ttlSeconds: 120}}
      limits: {{memoryMaxBytes: 256Mi, pidsMax: 128}}
      filesystem: {{rootfs: host}}
      authority:
        egressRules:
          - {{host: {ALPHA}, port: 80}}
          - {{host: {GAMMA}, port: 80}}
        dnsAuthority:
          hostnameAllowlist: [{ALPHA}, {GAMMA}]
""")
        return path
