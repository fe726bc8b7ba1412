"""Runs `cellos run --quiet examples/bench/true.yaml` of each given cellos build and bwrap with
the binds of scripts/bench-run.sh alternately, one after another in every round (the order
reversed every other round), so that drift of the machine lands on all of them alike; prints a
table of medians and each one's ratio to bwrap. Each build needs its cellos-cell-init beside it.
Needs root. Usage: python3 scripts/bench-alternate.py ROUNDS NAME=PATH/TO/cellos [NAME=PATH ...]"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "examples/bench/true.yaml")
BWRAP = ["/usr/bin/bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
         "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin", "--symlink",
         "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--ro-bind", "/etc", "/etc",
         "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "/bin/true"]
WARMUP = 10


def run_once(argv, env):
    """Wall time of one fork/exec/wait of `argv`, in ms; its output goes to /dev/null."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        null = os.open("/dev/null", os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.execve(argv[0], argv, env)
    _, status = os.waitpid(pid, 0)
    elapsed = (time.perf_counter() - start) * 1000
    if status != 0:
        sys.exit(f"{argv[0]} failed with wait status {status}")
    return elapsed


def main():
    rounds = int(sys.argv[1])
    builds = dict(arg.split("=", 1) for arg in sys.argv[2:])
    with tempfile.TemporaryDirectory() as home:
        env = dict(os.environ, CELLOS_HOME=home)
        first = next(iter(builds.values()))
        subprocess.run([first, "keygen"], env=env, stdout=subprocess.DEVNULL, check=True)
        commands = {name: [path, "run", "--quiet", SPEC] for name, path in builds.items()}
        commands["bwrap"] = BWRAP
        times = {name: [] for name in commands}
        names = list(commands)
        for i in range(rounds + WARMUP):
            for name in names if i % 2 == 0 else names[::-1]:
                ms = run_once(commands[name], env)
                if i >= WARMUP:
                    times[name].append(ms)
    bwrap = statistics.median(times["bwrap"])
    print("| command | median ms | ratio to bwrap |")
    print("|---|---|---|")
    for name in names:
        median = statistics.median(times[name])
        print(f"| {name} | {median:.2f} | {median / bwrap:.2f} |")


if __name__ == "__main__":
    main()
