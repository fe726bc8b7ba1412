# Network probes run inside cells (and on the host, as the control). Each probe returns a dict:
# {"error": "..."} when the attempt failed, otherwise what it got. `out` prints one JSON line
# per probe; the Rust side reads them back by label.
import json
import os
import random
import socket
import ssl
import struct
import urllib.request

TIMEOUT = 3.0


def out(label, result):
    result = dict(result)
    result["probe"] = label
    print(json.dumps(result), flush=True)


def err(e):
    return "%s: %s" % (type(e).__name__, e)


def resolver():
    with open("/etc/resolv.conf") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return parts[1]
    return None


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def recv_all(s):
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk


def skip_name(data, pos):
    while True:
        n = data[pos]
        if n & 0xC0 == 0xC0:
            return pos + 2
        if n == 0:
            return pos + 1
        pos += n + 1


def dns(name, qtype=1, server=None, tcp=False):
    """One query; rcode and the A/AAAA addresses of the answer."""
    server = server or resolver()
    qid = random.randrange(1 << 16)
    qname = b"".join(bytes([len(l)]) + l.encode() for l in name.rstrip(".").split("."))
    query = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + b"\0" + struct.pack(">HH", qtype, 1)
    family = socket.AF_INET6 if ":" in server else socket.AF_INET
    try:
        if tcp:
            with socket.create_connection((server, 53), timeout=TIMEOUT) as s:
                s.sendall(struct.pack(">H", len(query)) + query)
                data = recv_exact(s, struct.unpack(">H", recv_exact(s, 2))[0])
        else:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.settimeout(TIMEOUT)
                s.sendto(query, (server, 53))
                data = s.recv(4096)
    except OSError as e:
        return {"error": err(e), "server": server}
    rcode = data[3] & 0x0F
    qd, an = struct.unpack(">HH", data[4:8])
    pos = 12
    for _ in range(qd):
        pos = skip_name(data, pos) + 4
    addrs = []
    for _ in range(an):
        pos = skip_name(data, pos)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        rdata = data[pos:pos + rdlen]
        pos += rdlen
        if rtype == 1:
            addrs.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28:
            addrs.append(socket.inet_ntop(socket.AF_INET6, rdata))
    return {"rcode": rcode, "answers": an, "addrs": addrs, "server": server}


def getaddr(name, port):
    """The system resolver, as ordinary programs use it."""
    try:
        infos = socket.getaddrinfo(name, port, proto=socket.IPPROTO_TCP)
        return {"addrs": sorted({i[4][0] for i in infos})}
    except OSError as e:
        return {"error": err(e)}


def tcp(ip, port):
    try:
        with socket.create_connection((ip, port), timeout=TIMEOUT):
            return {"connected": True}
    except OSError as e:
        return {"error": err(e)}


def http(ip, port, host):
    try:
        with socket.create_connection((ip, port), timeout=TIMEOUT) as s:
            s.sendall(("GET / HTTP/1.0\r\nHost: %s\r\n\r\n" % host).encode())
            data = recv_all(s)
    except OSError as e:
        return {"error": err(e)}
    if not data:
        return {"error": "connection closed without a response"}
    return {"response": data.decode(errors="replace")}


def https(ip, port, sni, host=None):
    """A real TLS handshake (certificate checked against `sni`), then one HTTP request."""
    ctx = ssl.create_default_context(cadata=CA)
    if sni is None:
        ctx.check_hostname = False
    try:
        with socket.create_connection((ip, port), timeout=TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname=sni) as s:
                s.sendall(("GET / HTTP/1.0\r\nHost: %s\r\n\r\n" % (host or sni or ip)).encode())
                data = recv_all(s)
    except (OSError, ssl.SSLError) as e:
        return {"error": err(e)}
    if not data:
        return {"error": "connection closed without a response"}
    return {"response": data.decode(errors="replace")[:200]}


def udp(ip, port, payload=None):
    payload = payload or ("probe-%d" % random.randrange(1 << 30)).encode()
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(TIMEOUT)
            s.sendto(payload, (ip, port))
            data = s.recv(4096)
    except OSError as e:
        return {"error": err(e)}
    return {"echo": data == payload}


def fetch(url):
    """urllib with its default handlers, which honour HTTP_PROXY / HTTPS_PROXY."""
    ctx = ssl.create_default_context(cadata=CA)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT, context=ctx) as r:
            return {"status": r.status, "response": r.read().decode(errors="replace")[:200]}
    except Exception as e:  # urllib wraps socket errors in several types
        return {"error": err(e)}


def ipv6_state():
    """Global IPv6 addresses and routes (beyond loopback, link-local and multicast)."""
    addrs, routes = [], []
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                fields = line.split()
                if fields[3] == "00":
                    addrs.append(fields[0])
        with open("/proc/net/ipv6_route") as f:
            for line in f:
                fields = line.split()
                dest, iface = fields[0], fields[9]
                if iface != "lo" and not dest.startswith(("fe80", "ff")):
                    routes.append("%s/%d dev %s" % (dest, int(fields[1], 16), iface))
    except OSError as e:
        return {"error": err(e)}
    return {"addrs": addrs, "routes": routes}
