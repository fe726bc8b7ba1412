"""Every tool of `cellos mcp`, through the official Python MCP SDK, over stdio, streamable HTTP
and `/mcp` on `cellos serve` (the `endpoint` fixture runs each test on all three)."""
import asyncio
import base64
import json
import os
import subprocess

import httpx
import pytest

from conftest import CELLOS
from internet import ALPHA, BODY, GAMMA

pytestmark = pytest.mark.anyio

TOOLS = {"sandbox_create", "sandbox_exec", "sandbox_read_file", "sandbox_write_file",
         "sandbox_list_files", "sandbox_destroy", "run", "sandbox_evidence"}


def ok(result):
    """The structured result of a call that must have worked."""
    assert not result.isError, result.content[0].text
    return result.structuredContent or json.loads(result.content[0].text)


def error(result):
    """The message of a call that must have failed as a tool error."""
    assert result.isError, result.content[0].text
    return result.content[0].text


async def test_list_tools_returns_every_tool_with_an_input_schema_and_a_description(endpoint):
    async with endpoint.connect() as s:
        tools = {t.name: t for t in (await s.list_tools()).tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert tool.inputSchema["type"] == "object", tool.name
        assert tool.inputSchema["properties"], tool.name
        assert len(tool.description) > 80, tool.name
    assert {"id", "command", "argv", "cwd", "env", "stdin", "timeoutMs"} <= set(tools["sandbox_exec"].inputSchema["properties"])
    assert {"profile", "egress", "ttlSeconds", "limits", "files"} <= set(tools["sandbox_create"].inputSchema["properties"])
    assert {"profile", "command", "argv", "egress", "files", "timeoutMs"} <= set(tools["run"].inputSchema["properties"])
    assert "never widen" in tools["sandbox_create"].description


async def test_run_of_python_prints_42_and_destroys_its_cell(endpoint):
    async with endpoint.connect() as s:
        out = ok(await s.call_tool("run", {"profile": "python", "command": "python3 -c 'print(6*7)'"}))
        assert out["stdout"] == "42\n" and out["exitCode"] == 0 and out["durationMs"] >= 0
        # The cell is gone, and its evidence says how it ended.
        assert "has ended" in error(await s.call_tool("sandbox_exec", {"id": out["id"], "command": "true"}))
        ev = ok(await s.call_tool("sandbox_evidence", {"id": out["id"]}))
    assert ev["chainVerified"] is True
    completed = [e for e in ev["execs"] if e["data"]["event"] == "exec.v1.completed"]
    assert completed[0]["data"]["argv"] == ["/bin/sh", "-c", "python3 -c 'print(6*7)'"]
    assert any(e["data"]["event"] == "lifecycle.v1.destroyed" for e in ev["lifecycle"])


async def test_a_written_file_is_read_back_by_cat_and_by_read_file(endpoint):
    async with endpoint.connect() as s:
        cell = ok(await s.call_tool("sandbox_create", {"profile": "python"}))
        cid = cell["id"]
        w = ok(await s.call_tool("sandbox_write_file", {"id": cid, "path": "/work/notes.txt", "content": "line one\nline two\n"}))
        assert w["size"] == 18 and len(w["sha256"]) == 64
        cat = ok(await s.call_tool("sandbox_exec", {"id": cid, "command": "cat /work/notes.txt"}))
        assert cat["stdout"] == "line one\nline two\n"
        read = ok(await s.call_tool("sandbox_read_file", {"id": cid, "path": "/work/notes.txt"}))
        assert read["content"] == "line one\nline two\n" and read["size"] == 18
        ok(await s.call_tool("sandbox_destroy", {"id": cid}))


async def test_every_tool_works(endpoint):
    blob = bytes(range(256))
    async with endpoint.connect() as s:
        cell = ok(await s.call_tool("sandbox_create", {
            "profile": "python", "ttlSeconds": 120, "limits": {"memoryMaxBytes": 268435456},
            "files": [{"path": "/work/main.py", "content": "import sys\nprint(sys.stdin.read().upper())\n"}]}))
        cid = cell["id"]
        assert cell["mayReach"] == [] and cell["ttlSeconds"] == 120
        assert cell["limits"]["memoryMaxBytes"] == 268435456 and cell["files"][0]["path"] == "/work/main.py"

        ok(await s.call_tool("sandbox_write_file", {"id": cid, "path": "/work/blob.bin",
                                                   "content": base64.b64encode(blob).decode(), "encoding": "base64"}))
        ok(await s.call_tool("sandbox_write_file", {"id": cid, "path": "/work/run.sh",
                                                   "content": "#!/bin/sh\necho \"$GREETING from $(pwd)\"\n", "mode": 0o755}))
        back = ok(await s.call_tool("sandbox_read_file", {"id": cid, "path": "/work/blob.bin", "encoding": "base64"}))
        assert base64.b64decode(back["content"]) == blob
        part = ok(await s.call_tool("sandbox_read_file", {"id": cid, "path": "/work/blob.bin", "encoding": "base64", "offset": 250, "length": 4}))
        assert base64.b64decode(part["content"]) == blob[250:254] and "offset 254" in part["truncated"]

        listed = ok(await s.call_tool("sandbox_list_files", {"id": cid, "path": "/work"}))
        names = {e["name"]: e for e in listed["entries"]}
        assert {"main.py", "blob.bin", "run.sh"} <= set(names) and names["blob.bin"]["size"] == 256

        stdin = ok(await s.call_tool("sandbox_exec", {"id": cid, "argv": ["python3", "/work/main.py"], "stdin": "shout"}))
        assert stdin["stdout"] == "SHOUT\n"
        env = ok(await s.call_tool("sandbox_exec", {"id": cid, "argv": ["./run.sh"], "cwd": "/work", "env": {"GREETING": "hi"}}))
        assert env["stdout"] == "hi from /work\n"
        status = ok(await s.call_tool("sandbox_exec", {"id": cid, "command": "echo oops >&2; exit 3"}))
        assert status["exitCode"] == 3 and status["stderr"] == "oops\n"
        sig = ok(await s.call_tool("sandbox_exec", {"id": cid, "command": "kill -9 $$"}))
        assert sig["signal"] == 9 and "exitCode" not in sig

        ev = ok(await s.call_tool("sandbox_evidence", {"id": cid}))
        assert ev["chainVerified"] is True and ev["eventsVerified"] > 0
        files = {(e["data"]["event"], e["data"]["path"]) for e in ev["files"]}
        assert ("file.v1.written", "/work/blob.bin") in files and ("file.v1.read", "/work/blob.bin") in files
        statuses = [e["data"]["status"] for e in ev["execs"] if e["data"]["event"] == "exec.v1.completed"]
        assert statuses == [0, 0, 3, 137]
        assert ev["admission"][0]["data"]["decision"]["verdict"] == "admit"

        gone = ok(await s.call_tool("sandbox_destroy", {"id": cid}))
        assert gone["destroyed"] is True and gone["residueFree"] is True
        assert "has ended" in error(await s.call_tool("sandbox_read_file", {"id": cid, "path": "/work/blob.bin"}))


async def test_long_output_is_cut_with_a_note_saying_how_much_is_missing_and_how_to_read_it(endpoint):
    async with endpoint.connect() as s:
        cell = ok(await s.call_tool("sandbox_create", {"profile": "python"}))
        out = ok(await s.call_tool("sandbox_exec", {"id": cell["id"], "command": "head -c 200000 /dev/zero | tr '\\0' a"}))
        ok(await s.call_tool("sandbox_destroy", {"id": cell["id"]}))
        run = ok(await s.call_tool("run", {"profile": "python", "command": "seq 1 100000"}))
    assert len(out["stdout"]) == 65536 and out["stdoutBytes"] == 200000
    assert "134464 of 200000 bytes not shown" in out["truncated"] and "sandbox_read_file" in out["truncated"]
    assert "sandbox_create" in run["truncated"] and run["stdout"].startswith("1\n2\n3\n")


async def test_a_request_to_widen_a_profile_is_a_tool_error_and_an_event(endpoint):
    async with endpoint.connect() as s:
        ttl = error(await s.call_tool("sandbox_create", {"profile": "python", "ttlSeconds": 3600}))
        mem = error(await s.call_tool("run", {"profile": "python", "command": "true", "limits": {"memoryMaxBytes": 2 << 30}}))
        net = error(await s.call_tool("sandbox_create", {"profile": "web", "egress": [f"{ALPHA}:80", "evil.example:443"]}))
        cell = ok(await s.call_tool("sandbox_create", {"profile": "python"}))
        long = error(await s.call_tool("sandbox_exec", {"id": cell["id"], "command": "true", "timeoutMs": 3600000}))
        ok(await s.call_tool("sandbox_destroy", {"id": cell["id"]}))
    assert "ttlSeconds: 3600 s exceeds the limit of profile \"python\", 300 s" in ttl
    assert "limits.memoryMaxBytes: 2147483648 bytes exceeds the limit of profile \"python\", 536870912 bytes" in mem
    assert "egress[1]: evil.example:443 is not in the egress of profile \"web\"" in net
    assert "timeoutMs: 3600000 exceeds the limit of profile \"python\", 300000 ms" in long
    denied = [e for e in endpoint.events("admission.v1.decided") if e["data"]["decision"]["verdict"] == "deny"]
    violations = [v for e in denied for v in e["data"]["decision"]["violations"]]
    assert {"ttlSeconds", "limits.memoryMaxBytes", "egress[1]", "timeoutMs"} <= {v["path"] for v in violations}
    assert all(e.get("cellosactor") for e in denied)
    assert any(v["packId"] == "mcp-profile:web" and v["rule"] == "narrowOnly" for v in violations)


async def test_a_timeout_and_a_killed_cell_are_tool_errors_and_the_session_goes_on(endpoint):
    async with endpoint.connect() as s:
        cell = ok(await s.call_tool("sandbox_create", {"profile": "python"}))
        cid = cell["id"]
        timed = await s.call_tool("sandbox_exec", {"id": cid, "command": "echo started; sleep 30", "timeoutMs": 500})
        assert "timed out" in error(timed) and timed.structuredContent["stdout"] == "started\n"
        hit = ok(await s.call_tool("sandbox_evidence", {"id": cid}))["limitsHit"]
        assert [e["data"]["timedOut"] for e in hit] == [True]
        assert ok(await s.call_tool("sandbox_exec", {"id": cid, "command": "echo still here"}))["stdout"] == "still here\n"

        sleeper = asyncio.create_task(s.call_tool("sandbox_exec", {"id": cid, "command": "sleep 60"}))
        await asyncio.sleep(1.0)
        ok(await s.call_tool("sandbox_destroy", {"id": cid}))
        killed = await asyncio.wait_for(sleeper, 30)
        assert "killed" in error(killed)
        assert "has ended" in error(await s.call_tool("sandbox_exec", {"id": cid, "command": "true"}))
        assert ok(await s.call_tool("run", {"profile": "python", "command": "echo after"}))["stdout"] == "after\n"


async def test_bad_arguments_unknown_cells_and_profiles_are_tool_errors(endpoint):
    async with endpoint.connect() as s:
        assert "missing field `id`" in error(await s.call_tool("sandbox_exec", {"command": "true"}))
        assert "unknown field `cmd`" in error(await s.call_tool("run", {"profile": "python", "cmd": "true"}))
        assert "not both" in error(await s.call_tool("run", {"profile": "python", "command": "true", "argv": ["true"]}))
        assert "give command" in error(await s.call_tool("run", {"profile": "python"}))
        assert "ttlSeconds" in error(await s.call_tool("sandbox_create", {"profile": "python", "ttlSeconds": "soon"}))
        assert 'no profile "perl"; profiles: python, web' in error(await s.call_tool("run", {"profile": "perl", "command": "true"}))
        assert 'no cell "mcp-nope"' in error(await s.call_tool("sandbox_exec", {"id": "mcp-nope", "command": "true"}))
        assert 'no cell "mcp-nope"' in error(await s.call_tool("sandbox_evidence", {"id": "mcp-nope"}))
        assert "expected host:port" in error(await s.call_tool("sandbox_create", {"profile": "web", "egress": ["alpha.example"]}))
        unwritable = error(await s.call_tool("sandbox_create", {"profile": "python", "files": [{"path": "/usr/bin/x", "content": "x"}]}))
        assert "refused" in unwritable or "read-only" in unwritable, unwritable
        cell = ok(await s.call_tool("sandbox_create", {"profile": "python"}))
        assert "not valid base64" in error(await s.call_tool("sandbox_write_file", {"id": cell["id"], "path": "/work/x", "content": "!!", "encoding": "base64"}))
        assert "not found" in error(await s.call_tool("sandbox_read_file", {"id": cell["id"], "path": "/work/none"}))
        assert "could not be started" in error(await s.call_tool("sandbox_exec", {"id": cell["id"], "argv": ["/no/such/program"]}))
        ok(await s.call_tool("sandbox_destroy", {"id": cell["id"]}))
        # The session is still good after all of that.
        assert ok(await s.call_tool("run", {"profile": "python", "argv": ["echo", "fine"]}))["stdout"] == "fine\n"


async def test_twenty_parallel_runs_from_one_session_all_complete(endpoint):
    async with endpoint.connect() as s:
        calls = [s.call_tool("run", {"profile": "python", "command": f"python3 -c 'print({i}*{i})'"}) for i in range(20)]
        results = await asyncio.wait_for(asyncio.gather(*calls), 240)
    assert [ok(r)["stdout"] for r in results] == [f"{i * i}\n" for i in range(20)]
    assert len({ok(r)["id"] for r in results}) == 20


FETCH = ("import sys, urllib.request\n"
         "try:\n"
         "    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode(), end='')\n"
         "except Exception as e:\n"
         "    print('refused:', e); sys.exit(7)\n")


async def test_a_narrowed_egress_host_is_reachable_another_is_refused_and_both_show_in_evidence(endpoint, internet):
    async with endpoint.connect() as s:
        cell = ok(await s.call_tool("sandbox_create", {"profile": "web", "egress": [f"{ALPHA}:80"],
                                                     "files": [{"path": "/tmp/fetch.py", "content": FETCH}]}))
        cid = cell["id"]
        assert cell["mayReach"] == [f"{ALPHA}:80"]
        got = ok(await s.call_tool("sandbox_exec", {"id": cid, "argv": ["python3", "/tmp/fetch.py", f"http://{ALPHA}/hello.txt"]}))
        assert got["exitCode"] == 0 and got["stdout"] == BODY
        by_name = ok(await s.call_tool("sandbox_exec", {"id": cid, "argv": ["python3", "/tmp/fetch.py", f"http://{GAMMA}/hello.txt"]}))
        assert by_name["exitCode"] == 7
        by_addr = ok(await s.call_tool("sandbox_exec", {"id": cid, "argv": ["python3", "/tmp/fetch.py", f"http://{internet.gamma}/hello.txt"]}))
        assert by_addr["exitCode"] == 7
        ev = None
        for _ in range(50):  # observed events become durable within a quarter second
            ev = ok(await s.call_tool("sandbox_evidence", {"id": cid}))
            if ev["flowsDenied"] and ev["dnsRefused"] and ev["flowsAllowed"]:
                break
            await asyncio.sleep(0.2)
        ok(await s.call_tool("sandbox_destroy", {"id": cid}))
    assert ev["chainVerified"] is True
    assert ALPHA in {e["data"]["name"].rstrip(".") for e in ev["dnsPermitted"]}
    assert GAMMA in {e["data"]["name"].rstrip(".") for e in ev["dnsRefused"]}
    assert any(e["data"]["port"] == 80 for e in ev["flowsAllowed"])
    assert internet.gamma in {e["data"]["dst"] for e in ev["flowsDenied"]}


def unix_mcp(sock, session, method, params, id=1):
    """One JSON-RPC message to `/mcp` over the Unix socket (a plain client: the socket's peer
    uid is the caller, no token); the result of a request, `None` for a notification."""
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
    if session:
        headers["Mcp-Session-Id"] = session
    body = {"jsonrpc": "2.0", "method": method, "params": params}
    if id is not None:
        body["id"] = id
    with httpx.Client(transport=httpx.HTTPTransport(uds=sock), timeout=60) as http:
        response = http.post("http://localhost/mcp", json=body, headers=headers)
    assert response.status_code in (200, 202), response.text
    if id is None:
        return response.headers.get("mcp-session-id"), None
    data = [line[5:] for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()]
    message = json.loads(data[-1]) if data else response.json()
    return response.headers.get("mcp-session-id"), message["result"]


async def test_mcp_is_behind_the_same_authentication_as_the_rest_of_the_api(serve_endpoint, http_endpoint):
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    for endpoint in (serve_endpoint, http_endpoint):
        assert httpx.post(endpoint.url, json=body, headers=headers).status_code == 401
        wrong = {**headers, "Authorization": "Bearer wrong-token-0123456789"}
        assert httpx.post(endpoint.url, json=body, headers=wrong).status_code == 401
        good = httpx.post(endpoint.url, json=body, headers={**headers, "Authorization": f"Bearer {endpoint.token}"})
        assert good.status_code == 200, good.text

    # Over the Unix socket the caller is the peer's uid, with no token; its cells are its own,
    # unknown to a token holder over TCP.
    sock = serve_endpoint.sock
    session, _ = unix_mcp(sock, None, "initialize", body["params"])
    unix_mcp(sock, session, "notifications/initialized", {}, id=None)
    _, created = unix_mcp(sock, session, "tools/call", {"name": "sandbox_create", "arguments": {"profile": "python"}}, id=2)
    cid = created["structuredContent"]["id"]
    async with serve_endpoint.connect() as tcp:
        assert f'no cell "{cid}"' in error(await tcp.call_tool("sandbox_exec", {"id": cid, "command": "true"}))
    _, gone = unix_mcp(sock, session, "tools/call", {"name": "sandbox_destroy", "arguments": {"id": cid}}, id=3)
    assert gone["structuredContent"]["residueFree"] is True
    created_by = [e for e in serve_endpoint.events("admission.v1.decided") if e["subject"].endswith(cid)]
    assert created_by[0]["cellosactor"] == f"uid:{os.getuid()}"


def test_mcp_over_http_refuses_to_start_without_a_token_or_off_loopback_without_tls(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CELLOS_TOKEN"}
    no_token = subprocess.run([CELLOS, "--home", str(tmp_path), "mcp", "--http", "127.0.0.1:1"],
                              capture_output=True, text=True, env=env, timeout=60)
    assert no_token.returncode == 2 and "--http 127.0.0.1:1 needs a bearer token" in no_token.stderr, no_token.stderr
    (tmp_path / "token").write_text("a-long-enough-token-0123456789\n")
    no_tls = subprocess.run([CELLOS, "--home", str(tmp_path), "mcp", "--http", "0.0.0.0:1",
                             "--token-file", str(tmp_path / "token")],
                            capture_output=True, text=True, env=env, timeout=60)
    assert no_tls.returncode == 2 and "--http 0.0.0.0:1 is not a loopback address, so it needs TLS" in no_tls.stderr, no_tls.stderr
