//! End-to-end egress tests: real cells reaching a small "internet" built out of network
//! namespaces (an upstream dnsmasq with a query log, HTTP and HTTPS servers, one name sharing
//! another's address, a server on a private range), and the evidence they leave.
//!
//! Every test builds its own internet ([`internet::Internet`]) and tears it down on drop, so
//! tests run in parallel threads without seeing each other's traffic.

mod admission;
mod cell;
mod cleanup;
mod dns_wire;
mod enforcement;
mod internet;
mod ipv6;
mod self_test;
mod servers;
mod tools;
