"""The measurements behind scripts/bench-mcp.sh (see there). The MCP client is the official
Python SDK on stdio; every comparison alternates with its peer round by round in one process
and is printed as a ratio."""
import asyncio
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

CELLOS = os.environ["CELLOS_BIN"]
ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 100
ROOT = pathlib.Path(__file__).resolve().parents[1]
TRUE = {"profile": "python", "argv": ["/bin/true"]}


def ms(seconds):
    return seconds * 1000


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def run_true(session):
    result = await session.call_tool("run", TRUE)
    assert not result.isError and result.structuredContent["exitCode"] == 0, result


def cellos_run(env):
    subprocess.run([CELLOS, "run", "--quiet", str(ROOT / "examples/bench/true.yaml")], env=env, check=True,
                   stderr=subprocess.DEVNULL)


async def main():
    home = pathlib.Path(tempfile.mkdtemp(prefix="cellos-bench-mcp-"))
    env = dict(os.environ, CELLOS_HOME=str(home))
    subprocess.run([CELLOS, "keygen"], env=env, check=True, capture_output=True)
    params = StdioServerParameters(command=CELLOS, args=["--home", str(home), "mcp"])
    started = time.perf_counter()
    async with stdio_client(params, errlog=open(home / "mcp.log", "ab")) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            ready = time.perf_counter() - started
            for _ in range(5):  # warm both paths
                await run_true(session)
                cellos_run(env)
            mcp_times, run_times = [], []
            for _ in range(ROUNDS):
                t = time.perf_counter()
                await run_true(session)
                mcp_times.append(time.perf_counter() - t)
                t = time.perf_counter()
                cellos_run(env)
                run_times.append(time.perf_counter() - t)
            one, twenty = [], []
            for _ in range(max(3, ROUNDS // 20)):
                t = time.perf_counter()
                await run_true(session)
                one.append(time.perf_counter() - t)
                t = time.perf_counter()
                await asyncio.gather(*(run_true(session) for _ in range(20)))
                twenty.append(time.perf_counter() - t)
    verify = subprocess.run([CELLOS, "verify"], env=env, capture_output=True, text=True)
    print(f"{ROUNDS} rounds, release build; MCP client: the Python SDK, `cellos mcp` on stdio\n")
    print("| what | median ms | p99 ms |")
    print("|---|---|---|")
    print(f"| MCP `run` of `/bin/true` (fresh cell, exec, destroy), end to end | {ms(statistics.median(mcp_times)):.2f} | {ms(pct(mcp_times, 99)):.2f} |")
    print(f"| `cellos run /bin/true` (a fresh process) | {ms(statistics.median(run_times)):.2f} | {ms(pct(run_times, 99)):.2f} |")
    print(f"\nRatio MCP `run` / `cellos run`: **{statistics.median(mcp_times) / statistics.median(run_times):.2f}**\n")
    print("| what | median ms |")
    print("|---|---|")
    print(f"| one `run` | {ms(statistics.median(one)):.2f} |")
    print(f"| 20 parallel `run` calls from one session, all answered | {ms(statistics.median(twenty)):.2f} |")
    print(f"\nRatio 20 parallel / one: **{statistics.median(twenty) / statistics.median(one):.1f}**")
    print(f"\nServer start to initialized session: {ms(ready):.1f} ms; `cellos verify`: {verify.stdout.strip() or verify.stderr.strip()}")


asyncio.run(main())
