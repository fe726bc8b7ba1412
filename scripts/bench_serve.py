"""The measurements behind scripts/bench-serve.sh (see there). Every comparison runs in the same
process, alternating with its peer round by round, and is printed as a ratio."""
import concurrent.futures
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import httpx

CELLOS = os.environ["CELLOS_BIN"]
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
ROOT = pathlib.Path(__file__).resolve().parents[1]
BWRAP = ["bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
         "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin", "--symlink", "usr/lib", "/lib",
         "--symlink", "usr/lib64", "/lib64", "--ro-bind", "/etc", "/etc", "--proc", "/proc",
         "--dev", "/dev", "--tmpfs", "/tmp", "/bin/true"]
N = [0]


def spec():
    N[0] += 1
    return f"apiVersion: cellos.io/v1\nkind: ExecutionCell\nspec:\n  id: bench-{os.getpid()}-{N[0]}\n"


def ms(seconds):
    return seconds * 1000


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    home = pathlib.Path(tempfile.mkdtemp(prefix="cellos-bench-"))
    env = dict(os.environ, CELLOS_HOME=str(home))
    subprocess.run([CELLOS, "keygen"], env=env, check=True, capture_output=True)
    server = subprocess.Popen([CELLOS, "--home", str(home), "serve"], stderr=subprocess.DEVNULL)
    api = httpx.Client(transport=httpx.HTTPTransport(uds=str(home / "cellos.sock")),
                       base_url="http://cellos", timeout=120)
    for _ in range(300):
        try:
            if api.get("/healthz").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.05)

    def create():
        r = api.post("/v1/cells", content=spec(), headers={"content-type": "application/yaml"})
        r.raise_for_status()
        return r.json()["id"]

    def exec_true(cid):
        r = api.post(f"/v1/cells/{cid}/exec", json={"argv": ["/bin/true"]})
        r.raise_for_status()
        last = json.loads(r.text.strip().splitlines()[-1])
        assert last["type"] == "exit" and last["status"] == 0, last

    def destroy(cid):
        api.delete(f"/v1/cells/{cid}").raise_for_status()

    def api_cycle():
        cid = create()
        exec_true(cid)
        destroy(cid)

    def cellos_run():
        subprocess.run([CELLOS, "run", "--quiet", str(ROOT / "examples/bench/true.yaml")],
                       env=env, check=True)

    def bwrap():
        subprocess.run(BWRAP, check=True)

    for f in (api_cycle, cellos_run, bwrap):
        for _ in range(5):
            f()

    # 1. create + exec + destroy over the API, against one `cellos run`.
    cycle, run = [], []
    for _ in range(ROUNDS):
        cycle.append(timed(api_cycle))
        run.append(timed(cellos_run))
    print("## API create + exec /bin/true + destroy vs `cellos run /bin/true` (alternating rounds)\n")
    print("| what | median ms | p99 ms |\n|---|---|---|")
    print(f"| API create+exec+destroy | {ms(statistics.median(cycle)):.2f} | {ms(pct(cycle, 99)):.2f} |")
    print(f"| cellos run | {ms(statistics.median(run)):.2f} | {ms(pct(run, 99)):.2f} |")
    print(f"\nratio API cycle / cellos run: **{statistics.median(cycle) / statistics.median(run):.2f}**\n")

    # 2. exec latency in a running cell, against a cold bwrap.
    cid = create()
    execs, cold = [], []
    for _ in range(ROUNDS * 2):
        execs.append(timed(lambda: exec_true(cid)))
        cold.append(timed(bwrap))
    destroy(cid)
    print("## exec /bin/true in a running cell vs cold `bwrap ... /bin/true` (alternating)\n")
    print("| what | p50 ms | p99 ms |\n|---|---|---|")
    print(f"| exec in a running cell | {ms(pct(execs, 50)):.2f} | {ms(pct(execs, 99)):.2f} |")
    print(f"| bwrap cold | {ms(pct(cold, 50)):.2f} | {ms(pct(cold, 99)):.2f} |")
    print(f"\nratio exec p50 / bwrap p50: **{pct(execs, 50) / pct(cold, 50):.2f}**\n")

    # 3. 20 concurrent creates against one create.
    singles, bursts = [], []
    for _ in range(max(5, ROUNDS // 10)):
        ids = []
        singles.append(timed(lambda: ids.append(create())))
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            t = time.perf_counter()
            ids += list(pool.map(lambda _: create(), range(20)))
            bursts.append(time.perf_counter() - t)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(destroy, ids))
    print("## 20 concurrent creates vs one create\n")
    print("| what | median ms |\n|---|---|")
    print(f"| one create | {ms(statistics.median(singles)):.2f} |")
    print(f"| 20 concurrent creates (all answered) | {ms(statistics.median(bursts)):.2f} |")
    print(f"\nratio 20 concurrent / one: **{statistics.median(bursts) / statistics.median(singles):.2f}** (target <= 5)\n")

    # 4. memory per idle session cell.
    def rss_kib(pid):
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0
    def cell_memory(cid):
        for path in (f"/sys/fs/cgroup/cellos/{cid}/memory.current",
                     f"/sys/fs/cgroup/memory/cellos/{cid}/memory.usage_in_bytes"):
            try:
                return int(open(path).read())
            except OSError:
                continue
        return None
    idle = 100
    before = rss_kib(server.pid)
    ids = [create() for _ in range(idle)]
    time.sleep(1)
    after = rss_kib(server.pid)
    usages = [u for u in (cell_memory(c) for c in ids) if u is not None]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(destroy, ids))
    growth = (after - before) * 1024 / idle
    own = statistics.median(usages) if usages else float("nan")
    print(f"## memory per idle session cell ({idle} cells)\n")
    print("| what | KiB per cell |\n|---|---|")
    print(f"| the cell's own cgroup (median of {len(usages)}) | {own / 1024:.0f} |")
    print(f"| the server's RSS growth | {growth / 1024:.0f} |")
    print(f"\ntotal per idle cell: **{(own + growth) / 1048576:.2f} MiB** (target <= 2 MiB)\n")

    server.terminate()
    server.wait(timeout=60)


if __name__ == "__main__":
    main()
