//! Linux cell backend: namespaces, rootfs, cgroups, seccomp, Landlock and capabilities.

pub mod caps;
pub mod cgroup;
pub mod doctor;
pub mod error;
pub mod landlock_rules;
pub mod oci;
pub mod seccomp;
