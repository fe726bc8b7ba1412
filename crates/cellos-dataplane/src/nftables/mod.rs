//! nftables tables loaded in-process over netlink: one model, two outputs.
//!
//! # Design
//!
//! A [`Table`] is plain data (tables, chains, sets, counters, rules as typed statements). It
//! renders to canonical `nft` text ([`Table`]'s `Display`), which is what a ruleset's hash is
//! computed over and what `nft -f` would load, and it encodes to one nf_tables netlink batch
//! (NFNL_MSG_BATCH_BEGIN, NEWTABLE/NEWCHAIN/NEWOBJ/NEWSET/NEWSETELEM/NEWRULE, BATCH_END)
//! that the kernel applies atomically. The encoder emits the bytecode `nft` itself generates
//! for that text (payload loads, family checks, register layout of concatenations, interval
//! elements, set user data), and tests load both into fresh namespaces and compare
//! `nft list table`: the hashed text is what was loaded.
//!
//! # Why hand-written
//!
//! Running `nft` costs a process per load, pin and counter read (2-40 ms each). The crates
//! that speak nf_tables are GPL (`rustables`) or bind the C libnftnl (`nftnl`, GPL, and a
//! shared C library our static binaries cannot load); `netlink-packet-netfilter` covers
//! NFLOG and conntrack, not nf_tables. So framing and sockets come from `netlink-packet-core`
//! and `netlink-sys` (MIT), and only the nf_tables attributes of the few constructs CellOS
//! uses are written here, from the kernel's uapi header.

mod encode;
mod model;
pub(crate) mod netlink;
mod pool;
mod text;
pub(crate) mod uapi;

pub use encode::Object;
pub use model::*;
pub use netlink::NetlinkError;
pub use pool::{BaseRuleset, CellPart, UNCLAIMED};

pub(crate) use encode::{delete_counter, new_counter, set_elements};
pub(crate) use encode::{delete_table, element_update, table as encode_table};
pub(crate) use encode::{Attrs, Request, GETOBJ, GETOBJ_RESET, GETTABLE};
