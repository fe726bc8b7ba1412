//! The model as nf_tables netlink messages: the same bytecode `nft` 1.0 generates for the
//! canonical text (checked by the equivalence tests, which list both loads with `nft`).
//!
//! Constants are the kernel's uapi (`linux/netfilter/nf_tables.h`) and, for set user data,
//! libnftnl's `NFTNL_UDATA_*` layout, which `nft` reads back to print a set's type.

use std::fmt;

use super::model::*;
use super::uapi::{chain, elem, expr, obj, rule, set, table};
use crate::ruleset::Proto;

// Message types (NFT_MSG_*), nlmsg flags.
const NEWTABLE: u8 = 0;
pub(crate) const GETTABLE: u8 = 1;
const DELTABLE: u8 = 2;
const NEWCHAIN: u8 = 3;
const NEWRULE: u8 = 6;
const NEWSET: u8 = 9;
const NEWSETELEM: u8 = 12;
const DELSETELEM: u8 = 14;
const NEWOBJ: u8 = 18;
pub(crate) const GETOBJ: u8 = 19;
const DELOBJ: u8 = 20;
pub(crate) const GETOBJ_RESET: u8 = 21;
const F_CREATE: u16 = 0x400;
/// `NLM_F_EXCL`: creating what already exists is an error (`EEXIST`), not an update.
const F_EXCL: u16 = 0x200;
const F_APPEND: u16 = 0x800;

const NLA_F_NESTED: u16 = 0x8000;
const LIST_ELEM: u16 = 1;
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;

// Registers: 0 is the verdict, 1.. are 16-byte registers, 8.. the same space in 32-bit words.
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;

/// Netlink attributes being written (type-length-value, 4-byte aligned).
///
/// A few lines of writer instead of a dependency: the netlink crates model attributes as
/// one enum per message family, and nf_tables has none that is MIT/Apache licensed.
#[derive(Debug, Default, Clone)]
pub(crate) struct Attrs(pub(crate) Vec<u8>);

impl Attrs {
    pub(crate) fn bytes(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&ty.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
    }

    pub(crate) fn str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut data = s.as_bytes().to_vec();
        data.push(0);
        self.bytes(ty, &data)
    }

    pub(crate) fn be32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    fn be16(&mut self, ty: u16, v: u16) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    fn be64(&mut self, ty: u16, v: u64) -> &mut Self {
        self.bytes(ty, &v.to_be_bytes())
    }

    fn nest(&mut self, ty: u16, f: impl FnOnce(&mut Attrs)) -> &mut Self {
        let start = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        f(self);
        let len = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.0[start + 2..start + 4].copy_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// `ty { DATA_VALUE value }`.
    fn value(&mut self, ty: u16, value: &[u8]) -> &mut Self {
        self.nest(ty, |a| {
            a.bytes(DATA_VALUE, value);
        })
    }
}

/// The object a message creates, for errors: the kernel answers per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Table {
        family: Family,
        name: String,
    },
    Chain(String),
    Counter(String),
    Set(String),
    Elements(String),
    /// Rule `index` (from 0) of `chain`, with its text.
    Rule {
        chain: String,
        index: usize,
        text: String,
    },
    /// The anonymous set of a rule (`{ tcp, udp }`).
    RuleSet {
        chain: String,
        index: usize,
    },
    /// A message that creates no object: the batch itself, a dump request.
    Message(&'static str),
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Object::Table { family, name } => write!(f, "table {family} {name}"),
            Object::Chain(n) => write!(f, "chain {n}"),
            Object::Counter(n) => write!(f, "counter {n}"),
            Object::Set(n) => write!(f, "set {n}"),
            Object::Elements(n) => write!(f, "elements of set {n}"),
            Object::Rule { chain, index, text } => {
                write!(f, "rule {index} of chain {chain} ({text})")
            }
            Object::RuleSet { chain, index } => {
                write!(f, "the anonymous set of rule {index} of chain {chain}")
            }
            Object::Message(what) => f.write_str(what),
        }
    }
}

/// One nf_tables request: NFT_MSG_* type, family, extra nlmsg flags, attributes.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) op: u8,
    pub(crate) family: Family,
    pub(crate) flags: u16,
    pub(crate) attrs: Vec<u8>,
    pub(crate) object: Object,
}

pub(crate) fn family_code(f: Family) -> u8 {
    match f {
        Family::Inet => 1,
        Family::Ip => 2,
        Family::Ip6 => 10,
    }
}

/// Every message that loads `table`, in dependency order: table, chains, counters, sets and
/// their elements, then rules (each after its anonymous sets).
pub(crate) fn table(t: &Table) -> Vec<Request> {
    let mut out = Vec::new();
    let mut b = Builder {
        t,
        out: &mut out,
        next_set_id: 1,
    };
    b.table();
    out
}

struct Builder<'a> {
    t: &'a Table,
    out: &'a mut Vec<Request>,
    next_set_id: u32,
}

impl Builder<'_> {
    fn push(&mut self, op: u8, flags: u16, object: Object, attrs: Attrs) {
        self.out.push(Request {
            op,
            family: self.t.family,
            flags,
            attrs: attrs.0,
            object,
        });
    }

    /// A message's attributes, starting with its table (attribute 1 in every message type).
    fn attrs(&self) -> Attrs {
        let mut a = Attrs::default();
        a.str(table::NAME, &self.t.name);
        a
    }

    fn table(&mut self) {
        let object = Object::Table {
            family: self.t.family,
            name: self.t.name.clone(),
        };
        let mut new = self.attrs();
        new.be32(table::FLAGS, 0);
        if self.t.replace {
            self.push(NEWTABLE, F_CREATE, object.clone(), new.clone());
            self.push(DELTABLE, 0, object.clone(), self.attrs());
            self.push(NEWTABLE, F_CREATE, object, new);
        } else {
            // A table that is not replaced must not exist yet: loading onto a leftover would
            // append its rules to the leftover's.
            self.push(NEWTABLE, F_CREATE | F_EXCL, object, new);
        }
        for chain in &self.t.chains {
            self.chain(chain);
        }
        for name in &self.t.counters {
            let mut a = self.attrs();
            a.str(obj::NAME, name)
                .be32(obj::TYPE, obj::TYPE_COUNTER)
                .nest(obj::DATA, |d| {
                    d.be64(obj::COUNTER_BYTES, 0).be64(obj::COUNTER_PACKETS, 0);
                });
            self.push(NEWOBJ, F_CREATE, Object::Counter(name.clone()), a);
        }
        for set in &self.t.sets {
            let id = self.set(set);
            let base = self.attrs();
            for a in element_messages(
                &base,
                &set.name,
                Some(id),
                set.key,
                set.interval,
                &set.elements,
            ) {
                self.push(NEWSETELEM, F_CREATE, Object::Elements(set.name.clone()), a);
            }
        }
        for chain in &self.t.chains {
            for (index, rule) in chain.rules.iter().enumerate() {
                self.rule(chain, index, rule);
            }
        }
    }

    fn chain(&mut self, chain: &Chain) {
        let mut a = self.attrs();
        a.str(chain::NAME, &chain.name);
        if let Some(b) = chain.base {
            let (kind, policy) = (
                match b.kind {
                    ChainKind::Filter => "filter",
                    ChainKind::Nat => "nat",
                },
                match b.policy {
                    Policy::Drop => 0,
                    Policy::Accept => 1,
                },
            );
            let hook = match b.hook {
                Hook::Input => 1,
                Hook::Forward => 2,
                Hook::Output => 3,
                Hook::Postrouting => 4,
            };
            let prio = match b.priority {
                Priority::Filter => 0,
                Priority::SrcNat => 100,
                Priority::Value(v) => v,
            };
            a.str(chain::TYPE, kind)
                .be32(chain::POLICY, policy)
                .nest(chain::HOOK, |h| {
                    h.be32(chain::HOOK_HOOKNUM, hook)
                        .be32(chain::HOOK_PRIORITY, prio as u32);
                });
        }
        self.push(NEWCHAIN, F_CREATE, Object::Chain(chain.name.clone()), a);
    }

    /// NEWSET for a named set; returns its transaction id.
    fn set(&mut self, s: &Set) -> u32 {
        let id = self.take_id();
        let (ty, len, version) = match s.key {
            SetKey::Addr(v) => (addr_type(v), v.addr_len() as u32, v),
            SetKey::AddrProtoPort(v) => (
                (addr_type(v) << 12) | (12 << 6) | 13,
                v.addr_len() as u32 + 8,
                v,
            ),
        };
        let concat = matches!(s.key, SetKey::AddrProtoPort(_));
        let flags = [
            (s.interval, set::F_INTERVAL),
            (s.timeout, set::F_TIMEOUT),
            (s.interval && concat, set::F_CONCAT),
        ]
        .into_iter()
        .filter_map(|(on, bit)| on.then_some(bit))
        .fold(0u32, |acc, bit| acc | bit);
        let mut a = self.attrs();
        a.str(set::NAME, &s.name)
            .be32(set::FLAGS, flags)
            .be32(set::KEY_TYPE, ty)
            .be32(set::KEY_LEN, len)
            .be32(set::ID, id);
        let udata = match s.key {
            SetKey::Addr(_) => udata_u32(0, 2),
            SetKey::AddrProtoPort(_) => {
                if s.interval {
                    // NFTA_SET_DESC { CONCAT { field lengths } }: pipapo needs them.
                    a.nest(set::DESC, |d| {
                        d.nest(set::DESC_CONCAT, |c| {
                            for field in [version.addr_len() as u32, 1, 2] {
                                c.nest(LIST_ELEM, |e| {
                                    e.be32(set::FIELD_LEN, field);
                                });
                            }
                        });
                    });
                }
                // Key byte order "invalid" and a typeof concat without fields, as nft has it
                // for a `type a . b . c` declaration.
                [
                    udata_u32(0, 0),
                    udata_nest(3, &[udata_u32(0, 13), udata_nest(1, &[])]),
                ]
                .concat()
            }
        };
        a.bytes(set::USERDATA, &udata);
        self.push(NEWSET, F_CREATE, Object::Set(s.name.clone()), a);
        id
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_set_id;
        self.next_set_id += 1;
        id
    }

    fn rule(&mut self, chain: &Chain, index: usize, rule: &Rule) {
        let mut exprs = Exprs::default();
        for stmt in &rule.0 {
            match stmt {
                Stmt::Match(m) => {
                    if let Some(anon) = self.matches(&mut exprs, m) {
                        self.anonymous_set(chain, index, &anon);
                    }
                }
                other => statement(&mut exprs, other),
            }
        }
        let mut a = self.attrs();
        a.str(rule::CHAIN, &chain.name)
            .nest(rule::EXPRESSIONS, |l| l.0.extend_from_slice(&exprs.attrs.0));
        let object = Object::Rule {
            chain: chain.name.clone(),
            index,
            text: rule.to_string(),
        };
        self.push(NEWRULE, F_CREATE | F_APPEND, object, a);
    }

    /// Encodes one match; returns the anonymous set it looks up, if any.
    fn matches(&mut self, e: &mut Exprs, m: &Match) -> Option<Anon> {
        match m {
            Match::AddrIn { version, set } => {
                address_load(e, *version, Dir::Out);
                e.lookup(set, self.set_id(set));
            }
            Match::DestIn { version, set } => {
                address_load(e, *version, Dir::Out);
                let words = version.addr_len() as u32 / 4;
                e.meta(META_L4PROTO, reg32(words));
                if self.t.set(set).is_some_and(|s| s.interval) {
                    // Interval concatenations compare bytes: the protocol goes big-endian.
                    e.byteorder(reg32(words));
                }
                e.payload(BASE_TRANSPORT, 2, 2, reg32(words + 1));
                e.lookup(set, self.set_id(set));
            }
            Match::L4Proto(protos) => {
                e.meta(META_L4PROTO, REG_1);
                let keys = protos.iter().map(|p| vec![proto_number(*p)]).collect();
                return self.one_or_set(e, AnonKind::L4Proto, keys);
            }
            Match::TcpDport(ports) => {
                e.meta(META_L4PROTO, REG_1);
                e.cmp(CMP_EQ, &[6]);
                e.payload(BASE_TRANSPORT, 2, 2, REG_1);
                let keys = ports.iter().map(|p| p.to_be_bytes().to_vec()).collect();
                return self.one_or_set(e, AnonKind::TcpDport, keys);
            }
            Match::Icmpv6Type(types) => {
                nfproto(e, IpVersion::V6);
                e.meta(META_L4PROTO, REG_1);
                e.cmp(CMP_EQ, &[58]);
                e.payload(BASE_TRANSPORT, 0, 1, REG_1);
                let keys = types.iter().map(|t| vec![icmpv6_number(*t)]).collect();
                return self.one_or_set(e, AnonKind::Icmpv6Type, keys);
            }
            other => plain_match(e, other),
        }
        None
    }

    /// One value compares directly; several become an anonymous set (as `nft` does).
    fn one_or_set(&mut self, e: &mut Exprs, kind: AnonKind, keys: Vec<Vec<u8>>) -> Option<Anon> {
        if let [one] = keys.as_slice() {
            e.cmp(CMP_EQ, one);
            return None;
        }
        let id = self.take_id();
        e.lookup("__set%d", Some(id));
        Some(Anon { kind, keys, id })
    }

    /// Transaction id of a named set of this table: named sets are declared first, in order,
    /// so set `i` has id `i + 1`; anonymous sets take the ids after them.
    fn set_id(&self, name: &str) -> Option<u32> {
        self.t
            .sets
            .iter()
            .position(|s| s.name == name)
            .map(|i| i as u32 + 1)
    }

    fn anonymous_set(&mut self, chain: &Chain, index: usize, anon: &Anon) {
        let (ty, len, udata) = anon.kind.describe();
        let object = Object::RuleSet {
            chain: chain.name.clone(),
            index,
        };
        let mut a = self.attrs();
        a.str(set::NAME, "__set%d")
            .be32(set::FLAGS, set::F_ANONYMOUS | set::F_CONSTANT)
            .be32(set::KEY_TYPE, ty)
            .be32(set::KEY_LEN, len)
            .be32(set::ID, anon.id)
            .nest(set::DESC, |d| {
                d.be32(set::DESC_SIZE, anon.keys.len() as u32);
            })
            .bytes(set::USERDATA, &udata);
        self.push(NEWSET, F_CREATE, object.clone(), a);
        let mut a = self.attrs();
        a.str(elem::LIST_SET, "__set%d")
            .be32(elem::LIST_SET_ID, anon.id)
            .nest(elem::LIST_ELEMENTS, |list| {
                for (i, key) in anon.keys.iter().enumerate() {
                    list.nest(i as u16 + 1, |el| {
                        el.value(elem::KEY, key);
                    });
                }
            });
        self.push(NEWSETELEM, F_CREATE, object, a);
    }
}

#[derive(Debug, Clone, Copy)]
enum AnonKind {
    L4Proto,
    TcpDport,
    Icmpv6Type,
}

struct Anon {
    kind: AnonKind,
    keys: Vec<Vec<u8>>,
    id: u32,
}

impl AnonKind {
    /// Key type, key length, user data (key byte order and the `typeof` expression).
    fn describe(self) -> (u32, u32, Vec<u8>) {
        // typeof expressions: meta (9) key l4proto (16); payload (7) of protocol
        // description tcp (8) field dport (2), icmpv6 (14) field type (1).
        let (ty, len, order, expr, data) = match self {
            AnonKind::L4Proto => (12, 1, 1, 9, vec![udata_u32(0, 16)]),
            AnonKind::TcpDport => (13, 2, 2, 7, vec![udata_u32(0, 8), udata_u32(1, 2)]),
            AnonKind::Icmpv6Type => (29, 1, 2, 7, vec![udata_u32(0, 14), udata_u32(1, 1)]),
        };
        let typeof_ = udata_nest(3, &[udata_u32(0, expr), udata_nest(1, &data)]);
        (ty, len, [udata_u32(0, order), typeof_].concat())
    }
}

fn addr_type(v: IpVersion) -> u32 {
    match v {
        IpVersion::V4 => 7,
        IpVersion::V6 => 8,
    }
}

/// libnftnl user-data TLV: type and length bytes, value in host byte order.
fn udata_u32(ty: u8, v: u32) -> Vec<u8> {
    [&[ty, 4][..], &v.to_ne_bytes()].concat()
}

fn udata_nest(ty: u8, parts: &[Vec<u8>]) -> Vec<u8> {
    let body = parts.concat();
    [vec![ty, body.len() as u8], body].concat()
}

/// Elements per NEWSETELEM message: keeps each message's element list far below the 64 KiB
/// an attribute can hold (`nft` splits large sets the same way).
const ELEMENTS_PER_MESSAGE: usize = 256;

/// NEWSETELEM / DELSETELEM attributes for `elems` of set `name`, as many messages as needed.
fn element_messages(
    base: &Attrs,
    name: &str,
    id: Option<u32>,
    key: SetKey,
    interval: bool,
    elems: &[Element],
) -> Vec<Attrs> {
    let items = match (key, interval) {
        (SetKey::Addr(_), true) => rbtree_elements(elems),
        (SetKey::AddrProtoPort(_), true) => elems.iter().map(pipapo_element).collect(),
        (_, false) => elems.iter().map(hash_element).collect(),
    };
    items
        .chunks(ELEMENTS_PER_MESSAGE)
        .map(|chunk| {
            let mut a = base.clone();
            a.str(elem::LIST_SET, name);
            if let Some(id) = id {
                a.be32(elem::LIST_SET_ID, id);
            }
            a.nest(elem::LIST_ELEMENTS, |list| {
                for (i, item) in chunk.iter().enumerate() {
                    list.nest(i as u16 + 1, |el| el.0.extend_from_slice(&item.0));
                }
            });
            a
        })
        .collect()
}

/// An interval element of a concatenation: first and last key of the range.
fn pipapo_element(e: &Element) -> Attrs {
    let (lo, hi) = e.addr.range();
    let mut el = Attrs::default();
    el.value(elem::KEY, &concat_key(&lo, e))
        .value(elem::KEY_END, &concat_key(&hi, e));
    el
}

/// A single-key element, with its timeout if it has one.
fn hash_element(e: &Element) -> Attrs {
    let mut el = Attrs::default();
    if let Some(t) = e.timeout {
        el.be64(elem::TIMEOUT, t.as_millis() as u64);
    }
    el.value(elem::KEY, &concat_key(&e.addr.network().0, e));
    el
}

/// Address bytes, then (for concatenations) protocol and port, each padded to 4 bytes.
fn concat_key(addr: &[u8], e: &Element) -> Vec<u8> {
    let mut key = addr.to_vec();
    if let Some((proto, port)) = e.proto_port {
        key.extend_from_slice(&[proto_number(proto), 0, 0, 0]);
        key.extend_from_slice(&port.to_be_bytes());
        key.extend_from_slice(&[0, 0]);
    }
    key
}

/// Interval elements for a plain (rbtree) set: each range is its start and, flagged
/// INTERVAL_END, the address after its end; a range reaching the top of the address space
/// has no end and is marked open in the element's user data instead. A first range that does
/// not start at zero is preceded by an end marker at zero.
fn rbtree_elements(elems: &[Element]) -> Vec<Attrs> {
    let mut ranges: Vec<(Vec<u8>, Vec<u8>)> = elems.iter().map(|e| e.addr.range()).collect();
    ranges.sort();
    let mut out = Vec::new();
    let end_marker = |key: &[u8]| {
        let mut el = Attrs::default();
        el.be32(elem::FLAGS, elem::F_INTERVAL_END)
            .value(elem::KEY, key);
        el
    };
    if let Some((lo, _)) = ranges.first() {
        if lo.iter().any(|b| *b != 0) {
            out.push(end_marker(&vec![0; lo.len()]));
        }
    }
    for (lo, hi) in ranges {
        let mut start = Attrs::default();
        start.value(elem::KEY, &lo);
        match successor(&hi) {
            Some(next) => {
                out.push(start);
                out.push(end_marker(&next));
            }
            None => {
                // NFTNL_UDATA_SET_ELEM_FLAGS = NFTNL_SET_ELEM_F_INTERVAL_OPEN.
                start.bytes(elem::USERDATA, &udata_u32(1, 1));
                out.push(start);
            }
        }
    }
    out
}

/// `addr + 1`, or `None` past the last address.
fn successor(addr: &[u8]) -> Option<Vec<u8>> {
    let mut next = addr.to_vec();
    for byte in next.iter_mut().rev() {
        let (v, carry) = byte.overflowing_add(1);
        *byte = v;
        if !carry {
            return Some(next);
        }
    }
    None
}

/// DELTABLE for `family name`.
pub(crate) fn delete_table(family: Family, name: &str) -> Request {
    let mut attrs = Attrs::default();
    attrs.str(table::NAME, name);
    Request {
        op: DELTABLE,
        family,
        flags: 0,
        attrs: attrs.0,
        object: Object::Table {
            family,
            name: name.to_owned(),
        },
    }
}

/// NEWOBJ for counter `name` of table `family table`, at zero.
pub(crate) fn new_counter(family: Family, table: &str, name: &str) -> Request {
    Request {
        op: NEWOBJ,
        family,
        flags: F_CREATE,
        attrs: counter_attrs(table, name, true),
        object: Object::Counter(name.to_owned()),
    }
}

/// DELOBJ for counter `name` of table `family table`.
pub(crate) fn delete_counter(family: Family, table: &str, name: &str) -> Request {
    Request {
        op: DELOBJ,
        family,
        flags: 0,
        attrs: counter_attrs(table, name, false),
        object: Object::Counter(name.to_owned()),
    }
}

fn counter_attrs(table: &str, name: &str, zero: bool) -> Vec<u8> {
    let mut a = Attrs::default();
    a.str(obj::TABLE, table)
        .str(obj::NAME, name)
        .be32(obj::TYPE, obj::TYPE_COUNTER);
    if zero {
        a.nest(obj::DATA, |d| {
            d.be64(obj::COUNTER_BYTES, 0).be64(obj::COUNTER_PACKETS, 0);
        });
    }
    a.0
}

/// NEWSETELEM messages adding the elements of `set` to the existing set of that name in
/// `family table` (the set itself is not created).
pub(crate) fn set_elements(family: Family, table: &str, set: &Set) -> Vec<Request> {
    let mut base = Attrs::default();
    base.str(elem::LIST_TABLE, table);
    element_messages(&base, &set.name, None, set.key, set.interval, &set.elements)
        .into_iter()
        .map(|attrs| Request {
            op: NEWSETELEM,
            family,
            flags: F_CREATE,
            attrs: attrs.0,
            object: Object::Elements(set.name.clone()),
        })
        .collect()
}

/// Element changes: add every element (creating those absent), delete them, add them again
/// with their timeouts, in one transaction.
pub(crate) fn element_update(u: &ElementUpdate) -> Vec<Request> {
    let mut base = Attrs::default();
    base.str(elem::LIST_TABLE, &u.table);
    let bare: Vec<Element> = u
        .refresh
        .iter()
        .map(|e| Element {
            timeout: None,
            ..e.clone()
        })
        .collect();
    let add = element_messages(&base, &u.set, None, u.key, false, &u.refresh);
    let del = element_messages(&base, &u.set, None, u.key, false, &bare);
    let steps = [(NEWSETELEM, &add), (DELSETELEM, &del), (NEWSETELEM, &add)];
    steps
        .into_iter()
        .flat_map(|(op, messages)| {
            messages.iter().map(move |attrs| Request {
                op,
                family: u.family,
                flags: if op == NEWSETELEM { F_CREATE } else { 0 },
                attrs: attrs.0.clone(),
                object: Object::Elements(u.set.clone()),
            })
        })
        .collect()
}

/// Statements other than matches.
fn statement(e: &mut Exprs, stmt: &Stmt) {
    match stmt {
        Stmt::Match(_) => {}
        Stmt::Counter(name) => e.expr("objref", |a| {
            a.be32(expr::OBJREF_IMM_TYPE, obj::TYPE_COUNTER)
                .str(expr::OBJREF_IMM_NAME, name);
        }),
        Stmt::Log { prefix, group } => e.expr("log", |a| {
            a.str(expr::LOG_PREFIX, prefix)
                .be16(expr::LOG_GROUP, *group);
        }),
        Stmt::Reject(r) => {
            let (ty, code) = match r {
                Reject::TcpReset => (1, 0),
                Reject::IcmpxAdminProhibited => (2, 3),
            };
            e.expr("reject", |a| {
                a.be32(expr::REJECT_TYPE, ty)
                    .bytes(expr::REJECT_ICMP_CODE, &[code]);
            });
        }
        Stmt::Redirect(port) => {
            e.expr("immediate", |a| {
                a.be32(expr::IMMEDIATE_DREG, REG_1)
                    .value(expr::IMMEDIATE_DATA, &port.to_be_bytes());
            });
            // NF_NAT_RANGE_PROTO_SPECIFIED.
            e.expr("redir", |a| {
                a.be32(expr::REDIR_REG_PROTO_MIN, REG_1)
                    .be32(expr::REDIR_FLAGS, 0x2);
            });
        }
        Stmt::Masquerade => e.expr("masq", |_| {}),
        Stmt::Verdict(v) => {
            let (code, chain): (i32, Option<&str>) = match v {
                Verdict::Accept => (1, None),
                Verdict::Drop => (0, None),
                Verdict::Return => (-5, None),
                Verdict::Jump(c) => (-3, Some(c)),
            };
            e.expr("immediate", |a| {
                a.be32(expr::IMMEDIATE_DREG, REG_VERDICT)
                    .nest(expr::IMMEDIATE_DATA, |d| {
                        d.nest(DATA_VERDICT, |vd| {
                            vd.be32(expr::VERDICT_CODE, code as u32);
                            if let Some(c) = chain {
                                vd.str(expr::VERDICT_CHAIN, c);
                            }
                        });
                    });
            });
        }
    }
}

const META_IIF: u32 = 4;
const META_OIF: u32 = 5;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;

/// 32-bit register holding word `w` of a concatenation that starts in register 1; words on a
/// 16-byte boundary are named by their 16-byte register, as `nft` does.
fn reg32(w: u32) -> u32 {
    if w.is_multiple_of(4) {
        REG_1 + w / 4
    } else {
        8 + w
    }
}

fn addr_offset(v: IpVersion, dir: Dir) -> u32 {
    match (v, dir) {
        (IpVersion::V4, Dir::In) => 12,
        (IpVersion::V4, Dir::Out) => 16,
        (IpVersion::V6, Dir::In) => 8,
        (IpVersion::V6, Dir::Out) => 24,
    }
}

/// Matches that need no set.
fn plain_match(e: &mut Exprs, m: &Match) {
    match m {
        Match::Loopback(dir) => {
            e.meta(if *dir == Dir::In { META_IIF } else { META_OIF }, REG_1);
            e.cmp(CMP_EQ, &1u32.to_ne_bytes());
        }
        Match::IfName { dir, name, equal } => {
            let key = if *dir == Dir::In {
                META_IIFNAME
            } else {
                META_OIFNAME
            };
            e.meta(key, REG_1);
            let mut padded = name.as_bytes().to_vec();
            padded.resize(16, 0); // IFNAMSIZ
            e.cmp(if *equal { CMP_EQ } else { CMP_NEQ }, &padded);
        }
        Match::Addr { dir, addr } => address(e, *dir, *addr),
        Match::ThDport(port) => {
            e.payload(BASE_TRANSPORT, 2, 2, REG_1);
            e.cmp(CMP_EQ, &port.to_be_bytes());
        }
        Match::CtState(states) => {
            let bits = states.iter().fold(0u32, |acc, s| acc | ct_bit(*s));
            e.expr("ct", |a| {
                a.be32(expr::CT_KEY, 0).be32(expr::CT_DREG, REG_1);
            });
            e.bitwise(&bits.to_ne_bytes());
            e.cmp(CMP_NEQ, &[0; 4]);
        }
        Match::AddrIn { .. }
        | Match::DestIn { .. }
        | Match::L4Proto(_)
        | Match::TcpDport(_)
        | Match::Icmpv6Type(_) => {
            // Encoded by `Builder::matches`, which never hands them here.
        }
    }
}

/// The family check and a whole-address load into register 1.
fn address_load(e: &mut Exprs, v: IpVersion, dir: Dir) {
    nfproto(e, v);
    e.payload(
        BASE_NETWORK,
        addr_offset(v, dir),
        v.addr_len() as u32,
        REG_1,
    );
}

/// In an `inet` table an address match first checks the packet's family, once per rule.
fn nfproto(e: &mut Exprs, v: IpVersion) {
    if e.family == Some(v) {
        return;
    }
    e.family = Some(v);
    e.meta(META_NFPROTO, REG_1);
    e.cmp(CMP_EQ, &[if v == IpVersion::V4 { 2 } else { 10 }]);
}

/// `ip daddr X`: whole address, a byte-aligned prefix as a shorter load, else a mask.
fn address(e: &mut Exprs, dir: Dir, addr: Addr) {
    let v = addr.version();
    nfproto(e, v);
    let (bytes, prefix) = addr.network();
    let offset = addr_offset(v, dir);
    if prefix % 8 == 0 && prefix > 0 {
        let n = usize::from(prefix / 8);
        e.payload(BASE_NETWORK, offset, n as u32, REG_1);
        e.cmp(CMP_EQ, &bytes[..n]);
    } else {
        e.payload(BASE_NETWORK, offset, bytes.len() as u32, REG_1);
        let (lo, hi) = addr.range();
        let mask: Vec<u8> = lo.iter().zip(&hi).map(|(l, h)| !(l ^ h)).collect();
        e.bitwise(&mask);
        e.cmp(CMP_EQ, &bytes);
    }
}

fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

fn icmpv6_number(t: Icmpv6Type) -> u8 {
    match t {
        Icmpv6Type::MldListenerReport => 131,
        Icmpv6Type::MldListenerDone => 132,
        Icmpv6Type::NdRouterSolicit => 133,
        Icmpv6Type::NdRouterAdvert => 134,
        Icmpv6Type::NdNeighborSolicit => 135,
        Icmpv6Type::NdNeighborAdvert => 136,
        Icmpv6Type::Mld2ListenerReport => 143,
    }
}

fn ct_bit(s: CtState) -> u32 {
    match s {
        CtState::Invalid => 1,
        CtState::Established => 2,
        CtState::Related => 4,
    }
}

/// A rule's expression list being written.
#[derive(Default)]
struct Exprs {
    attrs: Attrs,
    /// The packet family this rule already checked (`meta nfproto`).
    family: Option<IpVersion>,
}

impl Exprs {
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Attrs)) {
        self.attrs.nest(LIST_ELEM, |el| {
            el.str(rule::EXPR_NAME, name).nest(rule::EXPR_DATA, data);
        });
    }

    fn meta(&mut self, key: u32, dreg: u32) {
        self.expr("meta", |a| {
            a.be32(expr::META_KEY, key).be32(expr::META_DREG, dreg);
        });
    }

    fn cmp(&mut self, op: u32, data: &[u8]) {
        self.expr("cmp", |a| {
            a.be32(expr::CMP_SREG, REG_1)
                .be32(expr::CMP_OP, op)
                .value(expr::CMP_DATA, data);
        });
    }

    fn payload(&mut self, base: u32, offset: u32, len: u32, dreg: u32) {
        self.expr("payload", |a| {
            a.be32(expr::PAYLOAD_DREG, dreg)
                .be32(expr::PAYLOAD_BASE, base)
                .be32(expr::PAYLOAD_OFFSET, offset)
                .be32(expr::PAYLOAD_LEN, len);
        });
    }

    fn bitwise(&mut self, mask: &[u8]) {
        let zeros = vec![0; mask.len()];
        self.expr("bitwise", |a| {
            a.be32(expr::BITWISE_SREG, REG_1)
                .be32(expr::BITWISE_DREG, REG_1)
                .be32(expr::BITWISE_LEN, mask.len() as u32)
                .value(expr::BITWISE_MASK, mask)
                .value(expr::BITWISE_XOR, &zeros);
        });
    }

    fn byteorder(&mut self, reg: u32) {
        // NFT_BYTEORDER_HTON of one 2-byte... as nft emits for inet_proto in a concatenation.
        self.expr("byteorder", |a| {
            a.be32(expr::BYTEORDER_SREG, reg)
                .be32(expr::BYTEORDER_DREG, reg)
                .be32(expr::BYTEORDER_OP, 1)
                .be32(expr::BYTEORDER_LEN, 1)
                .be32(expr::BYTEORDER_SIZE, 2);
        });
    }

    fn lookup(&mut self, set: &str, id: Option<u32>) {
        self.expr("lookup", |a| {
            a.be32(expr::LOOKUP_SREG, REG_1).str(expr::LOOKUP_SET, set);
            if let Some(id) = id {
                a.be32(expr::LOOKUP_SET_ID, id);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concatenation_words_are_named_as_nft_names_them() {
        // IPv4: address in reg 1, protocol in word 9, port in word 10; IPv6: the protocol
        // starts the second 16-byte register.
        assert_eq!((reg32(1), reg32(2)), (9, 10));
        assert_eq!((reg32(4), reg32(5)), (2, 13));
    }

    #[test]
    fn the_successor_of_the_last_address_is_none() {
        assert_eq!(successor(&[10, 255, 255, 255]), Some(vec![11, 0, 0, 0]));
        assert_eq!(successor(&[255; 4]), None);
    }

    fn element(net: &str) -> Element {
        Element {
            addr: Addr::from(cellos_core::spec::Cidr::parse(net).unwrap()),
            proto_port: None,
            timeout: None,
        }
    }

    #[test]
    fn interval_elements_mark_the_gap_below_the_first_range_and_an_open_top() {
        let items = rbtree_elements(&[element("240.0.0.0/4"), element("10.0.0.0/8")]);
        let mut zero_end = Attrs::default();
        zero_end
            .be32(elem::FLAGS, elem::F_INTERVAL_END)
            .value(elem::KEY, &[0; 4]);
        let mut open = Attrs::default();
        open.value(elem::KEY, &[240, 0, 0, 0])
            .bytes(elem::USERDATA, &[1, 4, 1, 0, 0, 0]);
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].0, zero_end.0);
        assert_eq!(items[3].0, open.0);
    }

    #[test]
    fn large_element_lists_are_split_across_messages() {
        let elems: Vec<Element> = (0..600u32)
            .map(|i| element(&format!("10.{}.{}.0/24", i / 256, i % 256)))
            .collect();
        let messages = element_messages(
            &Attrs::default(),
            "s",
            None,
            SetKey::Addr(IpVersion::V4),
            false,
            &elems,
        );
        assert_eq!(messages.len(), 3);
    }
}
