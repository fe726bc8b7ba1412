"""Load: two clients each drive 300 session cells (5 execs and one file transfer apiece) on one
server, the server is killed with SIGKILL while all 600 cells are alive, and a restarted server
reclaims them. Then every cell is in a terminal state in the projection of the log, nothing of
any cell is left on the host, and the log verifies."""
import concurrent.futures
import glob
import json
import os
import pathlib
import signal
import subprocess
import tempfile

from conftest import CELLOS, Server, free_port

CELLS_PER_CLIENT = int(os.environ.get("CELLOS_LOAD_CELLS", "300"))


def drive(server, client_no):
    ids = []
    with server.unix(timeout=120) as api:
        for i in range(CELLS_PER_CLIENT):
            cid = f"load-{client_no}-{i}"
            spec = ("apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n"
                    f"  id: {cid}\n  filesystem:\n    workspace:\n      target: /work\n"
                    "  limits:\n    pidsMax: 64\n")
            r = api.post("/v1/cells", content=spec, headers={"content-type": "application/yaml"})
            assert r.status_code == 201, r.text
            ids.append(cid)
            for n in range(5):
                r = api.post(f"/v1/cells/{cid}/exec", json={"argv": ["sh", "-c", f"echo {n} > /work/{n}"]})
                last = json.loads(r.text.strip().splitlines()[-1])
                assert last["type"] == "exit" and last["status"] == 0, (cid, r.text)
            payload = os.urandom(4096)
            assert api.put(f"/v1/cells/{cid}/files", params={"path": "/work/blob"}, content=payload).status_code == 200
            assert api.get(f"/v1/cells/{cid}/files", params={"path": "/work/blob"}).content == payload
    return ids


def leftovers(home, ids):
    found = []
    for cid in ids:
        if (home / "run" / f"{cid}.json").exists() or list((home / "run").glob(f"{cid}*")):
            found.append(f"record of {cid}")
        found += glob.glob(f"/sys/fs/cgroup/*/cellos/{cid}") + glob.glob(f"/sys/fs/cgroup/cellos/{cid}")
    return found


def test_two_clients_six_hundred_cells_then_kill_9_and_restart():
    home = pathlib.Path(tempfile.mkdtemp(prefix="cellos-load-"))
    (home / "token").write_text("load-token-" + os.urandom(8).hex() + "\n")
    server = Server(home, home / "cellos.sock", free_port(), None, None)
    server.start(tcp=False)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        ids = [cid for part in pool.map(lambda n: drive(server, n), range(2)) for cid in part]
    assert len(ids) == 2 * CELLS_PER_CLIENT
    with server.unix() as api:
        live = [c for c in api.get("/v1/cells", params={"limit": 1000}).json()["cells"] if c["state"] == "running"]
    assert len(live) == len(ids), len(live)

    server.stop(signal.SIGKILL)
    restarted = Server(home, home / "cellos.sock", free_port(), None, None)
    restarted.start(tcp=False)
    # The restarted server rebuilt what became of the dead server's cells from the log.
    with restarted.unix() as api:
        listed, cursor = {}, None
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = api.get("/v1/cells", params=params).json()
            listed.update({c["id"]: c["state"] for c in page["cells"]})
            cursor = page.get("nextCursor")
            if not cursor:
                break
        assert all(listed.get(cid) == "destroyed" for cid in ids), [c for c in ids if listed.get(c) != "destroyed"][:5]
        assert api.get(f"/v1/cells/{ids[0]}").json()["state"] == "destroyed"
    restarted.stop()
    log = (home / "serve.log").read_text()
    assert f"reclaimed {len(ids)} cell(s)" in log, log[-2000:]

    assert leftovers(home, ids) == []
    projection = json.loads(subprocess.run([CELLOS, "--home", str(home), "project"],
                                           check=True, capture_output=True, text=True).stdout)
    not_terminal = [cid for cid in ids if projection.get(cid, {}).get("phase") != "destroyed"]
    assert not_terminal == [], not_terminal[:10]
    verify = subprocess.run([CELLOS, "--home", str(home), "verify"], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
