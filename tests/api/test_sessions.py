"""Session cells through a real `cellos serve`, with Python's httpx over the Unix socket and
requests over TLS on loopback. Every test checks its property from the API's answers and from
inside the cell."""
import base64
import json
import threading
import time

import httpx
import pytest
import requests

from conftest import session_spec


def create(api, name, extra=""):
    r = api.post("/v1/cells", content=session_spec(name, extra),
                 headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def frames(response):
    for line in response.iter_lines():
        if line:
            yield json.loads(line)


def data(frame):
    if "data" in frame:
        return frame["data"].encode()
    return base64.b64decode(frame["dataBase64"])


def exec_(api, cid, argv, **extra):
    out, err, exit_frame, exec_id = b"", b"", None, None
    with api.stream("POST", f"/v1/cells/{cid}/exec", json={"argv": argv, **extra}) as r:
        assert r.status_code == 200, r.read()
        for f in frames(r):
            if f["type"] == "started":
                exec_id = f["execId"]
            elif f["type"] == "stdout":
                out += data(f)
            elif f["type"] == "stderr":
                err += data(f)
            elif f["type"] == "exit":
                exit_frame = f
    assert exit_frame is not None, "the stream ended without an exit frame"
    return out.decode(), err.decode(), exit_frame, exec_id


def destroy(api, cid):
    r = api.delete(f"/v1/cells/{cid}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "destroyed"
    teardown = body["teardown"]
    assert teardown["residue"] == [] and teardown["unverified"] == [], teardown


def test_a_session_cell_runs_fifty_execs_and_file_round_trips(api):
    cid = create(api, "fifty")
    for i in range(50):
        out, _, ex, _ = exec_(api, cid, ["sh", "-c", f"echo {i}; echo e{i} >&2; exit {i % 3}"])
        assert out == f"{i}\n" and ex["status"] == i % 3, (out, ex)
        payload = f"file {i}\n".encode() * (i + 1)
        w = api.put(f"/v1/cells/{cid}/files", params={"path": f"/work/f{i}"}, content=payload)
        assert w.status_code == 200, w.text
        assert w.json()["size"] == len(payload)
        r = api.get(f"/v1/cells/{cid}/files", params={"path": f"/work/f{i}"})
        assert r.status_code == 200 and r.content == payload
    # What the API wrote, the cell's own processes read.
    out, _, ex, _ = exec_(api, cid, ["sh", "-c", "cat /work/f49 | wc -l; stat -c %u /work/f49"])
    assert out.split() == ["50", "1000"], out
    listing = api.get(f"/v1/cells/{cid}/files/list", params={"path": "/work"}).json()["entries"]
    assert len([e for e in listing if e["name"].startswith("f")]) == 50
    info = api.get(f"/v1/cells/{cid}").json()
    assert info["execs"] == 51
    destroy(api, cid)


def test_an_exec_timeout_kills_its_process_tree_and_exits_124(api):
    cid = create(api, "timeout")
    started = time.time()
    _, _, ex, _ = exec_(api, cid, ["sh", "-c", "setsid sleep 300 & sleep 300"], timeoutMs=500)
    assert ex["status"] == 124 and ex["timedOut"], ex
    assert time.time() - started < 20
    out, _, _, _ = exec_(api, cid, ["sh", "-c",
                                    "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done | grep -c '^sleep 300' || true"])
    assert out.strip() == "0", "a process of the timed-out exec survived: " + out
    destroy(api, cid)


def test_output_survives_a_client_disconnect_and_is_reread_by_offset(api, server):
    cid = create(api, "reconnect")
    script = "for i in $(seq 1 40); do echo line$i; sleep 0.02; done"
    exec_id = None
    with server.unix() as client:
        with client.stream("POST", f"/v1/cells/{cid}/exec", json={"argv": ["sh", "-c", script]}) as r:
            for f in frames(r):
                if f["type"] == "started":
                    exec_id = f["execId"]
                if f["type"] == "stdout":
                    break  # disconnect mid-stream
    assert exec_id
    # The exec went on without us: follow it to the end from offset 0.
    with api.stream("GET", f"/v1/cells/{cid}/execs/{exec_id}", params={"offset": 0, "follow": "true"}) as r:
        got = list(frames(r))
    text = b"".join(data(f) for f in got if f["type"] == "stdout").decode()
    assert text == "".join(f"line{i}\n" for i in range(1, 41)), text
    assert got[-1]["type"] == "exit" and got[-1]["status"] == 0
    # From an offset in the middle, exactly the rest.
    offset = len("".join(f"line{i}\n" for i in range(1, 21)))
    with api.stream("GET", f"/v1/cells/{cid}/execs/{exec_id}", params={"offset": offset}) as r:
        rest = b"".join(data(f) for f in frames(r) if f["type"] == "stdout").decode()
    assert rest == "".join(f"line{i}\n" for i in range(21, 41))
    destroy(api, cid)


@pytest.mark.parametrize("target", ["/", "/proc/1/root", "HOME"])
def test_file_routes_do_not_escape_through_symlinks(api, server, target):
    cid = create(api, "escape")
    host_home = str(server.home)
    link_target = host_home if target == "HOME" else target
    exec_(api, cid, ["ln", "-s", link_target, "/work/link"])
    secret_name = "canary-" + cid
    (server.home / secret_name).write_text("host secret")
    r = api.get(f"/v1/cells/{cid}/files", params={"path": f"/work/link/{secret_name}"})
    assert r.status_code in (403, 404, 422), r.text
    assert b"host secret" not in r.content
    w = api.put(f"/v1/cells/{cid}/files", params={"path": f"/work/link/{secret_name}"}, content=b"overwritten")
    assert (server.home / secret_name).read_text() == "host secret", w.text
    for path in ["/work/../../../../" + host_home.lstrip("/") + "/" + secret_name, "/" + "a/" * 3000]:
        r = api.get(f"/v1/cells/{cid}/files", params={"path": path})
        assert r.status_code >= 400 and b"host secret" not in r.content
    destroy(api, cid)


def test_pause_freezes_the_cell_and_resume_restarts_it(api):
    cid = create(api, "pause")
    exec_(api, cid, ["sh", "-c", "(i=0; while :; do i=$((i+1)); echo $i > /work/n; sleep 0.05; done) >/dev/null 2>&1 &"])
    def counter():
        r = api.get(f"/v1/cells/{cid}/files", params={"path": "/work/n"})
        return int(r.content.strip() or 0)
    time.sleep(0.5)
    assert api.post(f"/v1/cells/{cid}/pause").json()["state"] == "paused"
    a = counter(); time.sleep(0.6); b = counter()
    assert a == b, f"the counter moved while paused: {a} -> {b}"
    r = api.post(f"/v1/cells/{cid}/exec", json={"argv": ["true"]})
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    assert api.post(f"/v1/cells/{cid}/resume").json()["state"] == "running"
    time.sleep(0.6)
    assert counter() > b, "the counter did not move after resume"
    destroy(api, cid)


def test_the_event_stream_resumes_without_gap_or_duplicate(api, server):
    cid = create(api, "sse")
    for i in range(5):
        exec_(api, cid, ["true"])
    def read_sse(last_id, count):
        headers = {"accept": "text/event-stream"}
        if last_id is not None:
            headers["last-event-id"] = str(last_id)
        seen = []
        with server.unix(timeout=30) as c, c.stream("GET", "/v1/events/stream", headers=headers) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("id:"):
                    seen.append(int(line[3:].strip()))
                    if len(seen) == count:
                        break
        return seen
    first = read_sse(None, 5)
    second = read_sse(first[-1], 5)
    assert first == list(range(first[0], first[0] + 5)), first
    assert second == list(range(first[-1] + 1, first[-1] + 6)), second
    # The page route agrees with the stream.
    page = api.get("/v1/events", params={"after": first[0] - 1, "limit": 10}).json()
    assert [e["cellosseq"] for e in page["events"]] == first + second
    destroy(api, cid)


def test_every_api_action_is_attributed_in_the_log(api):
    cid = create(api, "actor")
    exec_(api, cid, ["true"])
    destroy(api, cid)
    events = api.get("/v1/events", params={"cell": cid, "limit": 1000}).json()["events"]
    by_type = {e["type"]: e for e in events}
    prefix = "dev.cellos.events.cell."
    for t in ["admission.v1.decided", "exec.v1.started", "exec.v1.completed", "lifecycle.v1.destroyed"]:
        event = by_type.get(prefix + t)
        assert event is not None, (t, sorted(by_type))
        assert event.get("cellosactor", "").startswith("uid:"), event


def test_bad_input_gets_problem_details_with_paths(api):
    r = api.post("/v1/cells", content="spec: [", headers={"content-type": "application/yaml"})
    assert r.status_code in (400, 422) and r.headers["content-type"].startswith("application/problem+json")
    r = api.post("/v1/cells", content='{"apiVersion":"cellos.io/v1","kind":"ExecutionCell","spec":{"limits":{"memoryMaxBytes":"lots"}}}',
                 headers={"content-type": "application/json"})
    body = r.json()
    assert r.status_code == 422, body
    paths = [p["path"] for p in body["problems"]]
    assert paths == ["spec.limits.memoryMaxBytes"], body
    # A document that parses but breaks the rules gets every problem at once, each with its path.
    r = api.post("/v1/cells", content='{"apiVersion":"cellos.io/v1","kind":"ExecutionCell","spec":{"id":"Bad_Id","lifetime":{}}}',
                 headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    paths = sorted(p["path"] for p in r.json()["problems"])
    assert paths == ["spec.id", "spec.lifetime"], r.text
    r = api.post("/v1/cells/nope/exec", json={"argv": []})
    assert r.status_code in (400, 404)
    r = api.get("/v1/cells/does-not-exist")
    assert r.status_code == 404 and r.json()["type"].endswith("not-found")


def test_tls_with_a_token_on_loopback_using_requests(server):
    base = f"https://127.0.0.1:{server.port}"
    verify = str(server.cert[0])
    assert requests.get(base + "/v1/version", verify=verify).status_code == 401
    bad = {"authorization": "Bearer wrong"}
    assert requests.get(base + "/v1/version", verify=verify, headers=bad).status_code == 401
    auth = {"authorization": f"Bearer {server.token}"}
    assert requests.get(base + "/v1/version", verify=verify, headers=auth).status_code == 200
    r = requests.post(base + "/v1/cells", data=session_spec("tls"), verify=verify,
                      headers={**auth, "content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    r = requests.post(base + f"/v1/cells/{cid}/exec", json={"argv": ["echo", "over tls"]},
                      verify=verify, headers=auth, stream=True)
    lines = [json.loads(l) for l in r.iter_lines() if l]
    assert b"".join(data(f) for f in lines if f["type"] == "stdout") == b"over tls\n"
    assert lines[-1]["status"] == 0
    r = requests.delete(base + f"/v1/cells/{cid}", verify=verify, headers=auth)
    assert r.json()["state"] == "destroyed"
    # The TLS caller is named as the token's subject.
    events = requests.get(base + "/v1/events", params={"cell": cid}, verify=verify, headers=auth).json()["events"]
    assert any(e.get("cellosactor", "").startswith("token:") for e in events)


def test_a_cell_with_run_ends_with_its_workload_and_keeps_its_output(api):
    spec = session_spec("workload", "  run:\n    argv: [sh, -c, 'echo from the workload; exit 4']\n")
    r = api.post("/v1/cells", content=spec, headers={"content-type": "application/yaml"})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    assert r.json()["session"] is False
    with api.stream("GET", f"/v1/cells/{cid}/execs/e0", params={"offset": 0, "follow": "true"}) as s:
        got = list(frames(s))
    assert b"".join(data(f) for f in got if f["type"] == "stdout") == b"from the workload\n"
    assert got[-1]["type"] == "exit" and got[-1]["status"] == 4
    deadline = time.time() + 20
    while api.get(f"/v1/cells/{cid}").json()["state"] != "destroyed" and time.time() < deadline:
        time.sleep(0.05)
    info = api.get(f"/v1/cells/{cid}").json()
    assert info["state"] == "destroyed" and info["exitStatus"] == 4, info
    assert info["teardown"]["residue"] == []
    # Execs are for session cells; the answer says so.
    r = api.post(f"/v1/cells/{cid}/exec", json={"argv": ["true"]})
    assert r.status_code == 409


def test_an_idle_session_cell_is_destroyed_after_its_idle_timeout(api):
    cid = create(api, "idle", "  lifetime:\n    idleTimeoutSeconds: 1\n")
    exec_(api, cid, ["true"])
    deadline = time.time() + 15
    while api.get(f"/v1/cells/{cid}").json()["state"] != "destroyed" and time.time() < deadline:
        time.sleep(0.1)
    info = api.get(f"/v1/cells/{cid}").json()
    assert info["state"] == "destroyed", info
    assert info["teardown"]["residue"] == [] and info["teardown"]["unverified"] == []
    events = api.get("/v1/events", params={"cell": cid, "limit": 100}).json()["events"]
    destroyed = [e for e in events if e["type"].endswith("lifecycle.v1.destroyed")]
    assert destroyed and destroyed[0].get("cellosactor") == "system:lifetime", destroyed


def test_a_paused_cell_whose_ttl_runs_out_is_destroyed_cleanly(api):
    cid = create(api, "paused-ttl", "  lifetime:\n    ttlSeconds: 2\n")
    exec_(api, cid, ["sh", "-c", "sleep 300 >/dev/null 2>&1 &"])
    assert api.post(f"/v1/cells/{cid}/pause").json()["state"] == "paused"
    deadline = time.time() + 20
    while api.get(f"/v1/cells/{cid}").json()["state"] != "destroyed" and time.time() < deadline:
        time.sleep(0.1)
    info = api.get(f"/v1/cells/{cid}").json()
    assert info["state"] == "destroyed", info
    assert info["teardown"]["residue"] == [] and info["teardown"]["unverified"] == [], info["teardown"]
