//! Linux cell backend: namespaces, rootfs, cgroups, seccomp, Landlock and capabilities.

pub mod caps;
pub mod cgroup;
pub mod doctor;
pub mod error;
pub mod landlock_rules;
pub mod oci;
pub mod seccomp;
pub mod backend;
pub mod clone;
pub mod etc_mask;
pub mod idmap;
pub mod init;
pub mod netns;
pub mod plan;
pub mod protocol;
pub mod record;
pub mod rootfs;
pub mod safe_path;
pub mod trees;
