//! Common workloads run unchanged in a default cell (allow-list seccomp profile, Landlock,
//! no capabilities): each test runs one for real and checks what it produced.

mod cell_support;

use cell_support::*;
use cellos_core::ports::WorkloadExit;
use serde_json::json;

/// Run `script` with `/work` as a 256 MiB workspace; panic with its output unless it exited 0.
fn workload(name: &str, script: &str) -> String {
    let fx = fixture();
    let spec = shell(
        &unique_id(name),
        script,
        json!({
            "filesystem": {"workspace": {"target": "/work", "sizeBytes": "256Mi"}},
            "run": {"timeoutMs": 120000},
        }),
    );
    let r = run(&fx.backend, &spec);
    assert_eq!(
        r.outcome.exit,
        WorkloadExit::Exited { code: 0 },
        "{name} failed\nstdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert_eq!(
        r.isolation.seccomp_profile,
        cellos_linux::seccomp::DEFAULT_PROFILE_NAME
    );
    r.stdout
}

#[test]
fn sh_and_coreutils() {
    let script = r#"
set -e
cd /work
mkdir -p a/b/c && touch a/b/c/f && ln -s a/b/c/f link && readlink link
seq 1 5 | sort -r | head -n 2 | tr '\n' ' ' && echo
printf 'x\ny\n' > data && cp data copy && mv copy moved && cat data moved | wc -l
echo hello | sha256sum | cut -c1-16
chmod 600 data && stat -c '%a' data
dd if=/dev/zero of=zeros bs=1k count=4 status=none && du -k zeros | cut -f1
tar -cf a.tar a && rm -r a && tar -xf a.tar && find a -type f
date +%Y >/dev/null && id -u && env | grep -c '^HOME=/work$'
t=$(mktemp) && echo tmp > "$t" && cat "$t" && rm "$t"
sleep 0.1 & wait
ls -1 /work | xargs echo
"#;
    assert_eq!(
        workload("coreutils", script),
        "a/b/c/f\n5 4 \n4\n5891b5b522d5df08\n600\n4\na/b/c/f\n1000\n1\ntmp\n\
         a a.tar data link moved zeros\n"
    );
}

#[test]
fn python3_with_threads_and_subprocesses() {
    let script = r#"
python3 - <<'PY'
import concurrent.futures, multiprocessing, subprocess, threading

results = []
lock = threading.Lock()
def work(n):
    with lock:
        results.append(n * n)
threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print("threads", sum(results))

with concurrent.futures.ThreadPoolExecutor(4) as pool:
    print("pool", sum(pool.map(abs, range(-10, 0))))

out = subprocess.run(["sh", "-c", "echo from-child"], capture_output=True, text=True, check=True)
print("subprocess", out.stdout.strip())

with multiprocessing.Pool(2) as pool:
    print("processes", pool.map(len, ["a", "bb", "ccc"]))
PY
"#;
    assert_eq!(
        workload("python", script),
        "threads 140\npool 55\nsubprocess from-child\nprocesses [1, 2, 3]\n"
    );
}

#[test]
fn cc_builds_a_threaded_program_that_runs_from_the_workspace() {
    let script = r#"
set -e
cd /work
cat > t.c <<'C'
#include <pthread.h>
#include <stdio.h>
static void *run(void *arg) { *(int *)arg *= 2; return NULL; }
int main(void) {
    int v = 21;
    pthread_t t;
    if (pthread_create(&t, NULL, run, &v) != 0) return 1;
    pthread_join(t, NULL);
    printf("%d\n", v);
    return 0;
}
C
cc -O2 -pthread -o t t.c
./t
"#;
    assert_eq!(workload("cc", script), "42\n");
}

#[test]
fn git_init_and_commit() {
    let script = r#"
set -e
cd /work
git init -q repo && cd repo
echo one > f && git add f
git -c user.name=cell -c user.email=cell@example.invalid commit -qm first
echo two >> f
git -c user.name=cell -c user.email=cell@example.invalid commit -qam second
git log --format=%s | tr '\n' ' ' && echo
git status --porcelain | wc -l
"#;
    assert_eq!(workload("git", script), "second first \n0\n");
}

#[test]
fn pip_installs_a_local_wheel() {
    // The wheel is built in the cell by hand (zipfile), so nothing comes from an index.
    let script = r#"
set -e
cd /work
python3 - <<'PY'
import base64, hashlib, zipfile
files = {
    "tinycell/__init__.py": b"VALUE = 'from the wheel'\n",
    "tinycell-0.1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinycell\nVersion: 0.1\n",
    "tinycell-0.1.dist-info/WHEEL":
        b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
def digest(data):
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
record = "".join(f"{name},{digest(data)},{len(data)}\n" for name, data in files.items())
record += "tinycell-0.1.dist-info/RECORD,,\n"
with zipfile.ZipFile("tinycell-0.1-py3-none-any.whl", "w") as whl:
    for name, data in files.items():
        whl.writestr(name, data)
    whl.writestr("tinycell-0.1.dist-info/RECORD", record)
PY
python3 -m pip install --quiet --no-index --no-cache-dir --disable-pip-version-check \
    --target /work/site /work/tinycell-0.1-py3-none-any.whl
PYTHONPATH=/work/site python3 -c 'import tinycell; print(tinycell.VALUE)'
"#;
    assert_eq!(workload("pip", script), "from the wheel\n");
}
