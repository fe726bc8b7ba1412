//! Creating a cell, as four stages that each own what they make.
//!
//! 1. [`plan`]: validate and plan on the host side (cell id, Landlock ABI, rootfs, `/etc`
//!    mask, seccomp program, telemetry binds). Nothing exists on the host yet.
//! 2. [`host`]: run record, network lease, cgroup, telemetry runner (its socket is bound and
//!    the host process probe subscribed right after the cgroup exists, so the cell's first
//!    exec is observed), then the host paths opened as detached mount trees. From the record
//!    on, a guard undoes what exists if a later step fails.
//! 3. [`spawn`]: clone init in new user, pid, mount, net, ipc and uts namespaces, write its id
//!    maps and release it, move it into the cgroup, send the plan and the trees, and record
//!    its pid.
//! 4. [`attach`]: link a networked cell to the host and start its egress dataplane, start
//!    copying its output, and assemble the cell and its isolation report.
//!
//! create returns while init builds the root and parks the workload just before its exec, so
//! that work overlaps with whatever the caller does next.
//!
//! Each stage has its own error, naming the step that failed around the backend's error;
//! callers see that error (a [`LinuxError`](crate::error::LinuxError)) unchanged.
//!
//! The thread that calls `create` must outlive the cell: init dies with it (`PDEATHSIG`).

/// A stage's error: one variant per step, each keeping the backend error it failed with (and
/// showing it as is, so users see the same messages as from a single function).
macro_rules! stage_error {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $step:ident,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, thiserror::Error)]
        pub(crate) enum $name {
            $($(#[$vmeta])* #[error(transparent)] $step($crate::error::LinuxError),)+
        }

        impl From<$name> for $crate::error::LinuxError {
            fn from(err: $name) -> $crate::error::LinuxError {
                match err {
                    $($name::$step(e) => e,)+
                }
            }
        }
    };
}

pub(crate) mod attach;
pub(crate) mod host;
pub(crate) mod plan;
pub(crate) mod spawn;
