//! One cell's full lifecycle on the Linux backend (create, start, wait, destroy) for
//! `/bin/true`, beside `bwrap --unshare-all --die-with-parent` with the same view of the host,
//! run back to back so both see the same machine load. Needs root.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cellos_core::events::{CloudEvent, EventFactory};
use cellos_core::ports::{CellBackend, CellRequest, RuntimeEvidence, WorkloadExit};
use cellos_core::spec::ExecutionCellSpec;
use cellos_linux::backend::{LinuxBackend, LinuxBackendConfig};
use criterion::{criterion_group, criterion_main, Criterion};

const BWRAP: &str = "--unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/bin /bin \
                     --symlink usr/sbin /sbin --symlink usr/lib /lib --symlink usr/lib64 /lib64 \
                     --ro-bind /etc /etc --proc /proc --dev /dev --tmpfs /tmp /bin/true";

fn spec(n: u64, limits: bool) -> ExecutionCellSpec {
    let mut value = serde_json::json!({"id": format!("bench-{}-{n}", std::process::id()),
                                       "run": {"argv": ["/bin/true"]}});
    if limits {
        value["run"]["limits"] = serde_json::json!({"memoryMaxBytes": 134217728u64, "pidsMax": 32});
    }
    serde_json::from_value(value).expect("spec")
}

/// `/bin/true` observes nothing; a cell that did would have its events dropped here.
struct Discard;

impl RuntimeEvidence for Discard {
    fn observe(&self, _: CloudEvent) {}
}

fn lifecycle(c: &mut Criterion) {
    let state = tempfile::tempdir().expect("state dir");
    let backend = LinuxBackend::new(LinuxBackendConfig::new(
        state.path(),
        env!("CARGO_BIN_EXE_cellos-cell-init"),
    ))
    .expect("backend (run benches as root)");
    let counter = AtomicU64::new(0);
    let factory = EventFactory::new("bench-host", "linux-backend", Arc::new(String::new));
    let discard: Arc<dyn RuntimeEvidence> = Arc::new(Discard);
    let mut group = c.benchmark_group("cell_true");
    for (name, limits) in [("cell_with_limits", true), ("cell_no_limits", false)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let spec = spec(counter.fetch_add(1, Ordering::Relaxed), limits);
                let mut cell = backend
                    .create(CellRequest {
                        spec: &spec,
                        spec_hash: "0",
                        run_id: "bench",
                        secrets: Vec::new(),
                        secret_delivery: Default::default(),
                        stdout: Box::new(std::io::sink()),
                        stderr: Box::new(std::io::sink()),
                        factory: factory.clone(),
                        evidence: discard.clone(),
                    })
                    .expect("create");
                cell.start().expect("start");
                let outcome = cell.wait(None).expect("wait");
                assert_eq!(outcome.exit, WorkloadExit::Exited { code: 0 });
                cell.destroy().expect("destroy");
            })
        });
    }
    group.bench_function("bwrap", |b| {
        b.iter(|| {
            let status = Command::new("bwrap")
                .args(BWRAP.split_whitespace())
                .status()
                .expect("bwrap installed");
            assert!(status.success());
        })
    });
    group.finish();
}

criterion_group!(benches, lifecycle);
criterion_main!(benches);
