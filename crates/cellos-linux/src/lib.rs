//! Linux cell backend: namespaces, rootfs, cgroups, seccomp, Landlock and capabilities.

pub mod backend;
pub mod caps;
pub mod cgroup;
pub mod clone;
mod create;
pub mod doctor;
pub mod error;
pub mod etc_attached;
pub mod etc_mask;
pub mod idmap;
pub mod init;
pub mod init_in_clone;
pub mod landlock_rules;
pub mod netns;
pub mod netscope;
pub mod oci;
pub mod pidfd;
pub mod plan;
pub mod protocol;
pub mod record;
pub mod refusal;
pub mod residue;
pub mod rootfs;
pub mod safe_path;
pub mod seccomp;
pub mod telemetry;
pub mod trees;
