//! Long-lived threads that create cells.
//!
//! A cell's init dies when the *thread* that cloned it exits (`PR_SET_PDEATHSIG` follows the
//! parent thread, not the process), so a server must never create a cell from a thread that a
//! runtime may retire, such as an idle blocking-pool thread. Creates run here instead, on a
//! fixed set of threads that live as long as the registry, several at once so that one slow
//! create never holds up the others.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of cell-parent threads.
pub(crate) struct Parents {
    jobs: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Parents {
    pub(crate) fn new(count: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..count.max(1))
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("cell-parent-{i}"))
                    .spawn(move || worker(&rx))
            })
            .filter_map(Result::ok)
            .collect();
        Self {
            jobs: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
        }
    }

    /// Run `job` on a parent thread and wait for its result; `None` once the pool stopped.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = mpsc::channel();
        let sender = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        sender
            .send(Box::new(move || {
                let _ = tx.send(job());
            }))
            .ok()?;
        rx.recv().ok()
    }

    /// Stop taking jobs and wait for the threads (their cells must be gone by then).
    pub(crate) fn stop(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        job();
    }
}
