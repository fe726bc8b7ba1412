//! End-to-end tests of the `cellos` binary: real cells (root, real namespaces and cgroups),
//! real event logs, real exit codes.

mod agreement;
mod doctor;
mod documents;
mod evidence;
mod export;
mod freeze;
mod init;
mod installed;
mod landlock;
mod refusal;
mod remote;
mod run;
mod serve;
mod support;
mod telemetry;
