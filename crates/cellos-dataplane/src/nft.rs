//! Loads and reads the nftables state of one network namespace, in-process.
//!
//! Mechanism: a NETLINK_NETFILTER socket created inside the namespace (see
//! [`crate::nftables`]), opened on first use and kept for the controller's lifetime, so a
//! load, a pin or a counter read is one netlink round trip and no process. The namespace is
//! an open descriptor where the caller has one: it stays the same namespace for as long as
//! the controller lives. The `nft` tool is only used by [`NftController::list_table`] and
//! friends, for diagnostics and tests, and for scripts passed as text.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use netlink_packet_core::NlasIterator;
use nix::errno::Errno;

use crate::flowlog::{Count, NftCounters};
use crate::netns_exec::{run_tool, ToolError};
use crate::nftables::netlink::{NetlinkError, NfSocket};
use crate::nftables::uapi::{obj, table};
use crate::nftables::{self, Attrs, BaseRuleset, CellPart, ElementUpdate, Family, Object, Table};
use crate::pin::{AddressPinner, Pin, PinError};
use crate::ruleset::{EgressPlan, Ruleset, FAMILY, TABLE};

/// Why loading or reading nftables state failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("cannot open network namespace {path}: {source}; is the cell still running?")]
    Netns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("cannot run {binary}: {source}; install nftables (apt-get install nftables)")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("nft {args} exited with {status}: {stderr}")]
    Rejected {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("nft -j output is not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("table {family} {table} already holds a cell's elements; a pooled base takes one cell part: load a fresh base")]
    BaseClaimed { family: Family, table: String },
    #[error("table {family} {table} is not loaded; apply its base first")]
    NoBase { family: Family, table: String },
}

impl NftError {
    /// The object and errno the kernel rejected, when that is the failure.
    pub fn rejected(&self) -> Option<(&Object, Errno)> {
        match self {
            NftError::Netlink(NetlinkError::Rejected { object, errno }) => Some((object, *errno)),
            _ => None,
        }
    }
}

/// Which namespace a controller works in.
#[derive(Debug, Clone)]
enum Target {
    Current,
    Path(PathBuf),
    /// Held open: a path like `/proc/<pid>/ns/net` cannot promise the same namespace once the
    /// process is gone.
    Fd(Arc<OwnedFd>),
}

/// Loads tables and reads state in one network namespace. Clones share one socket.
#[derive(Debug, Clone)]
pub struct NftController {
    target: Target,
    socket: Arc<Mutex<Option<NfSocket>>>,
    binary: String,
}

/// Something [`NftController::apply`] can load.
pub trait Load {
    fn load(&self, controller: &NftController) -> Result<(), NftError>;
}

impl Load for Table {
    fn load(&self, controller: &NftController) -> Result<(), NftError> {
        controller.transact(&nftables::encode_table(self))
    }
}

impl Load for Ruleset {
    fn load(&self, controller: &NftController) -> Result<(), NftError> {
        self.table().load(controller)
    }
}

/// A script in `nft` syntax, loaded by the `nft` tool (`nft -f -`): for text that does not
/// come from the model.
impl Load for str {
    fn load(&self, controller: &NftController) -> Result<(), NftError> {
        controller.run(&["-f", "-"], Some(self)).map(drop)
    }
}

impl NftController {
    fn new(target: Target) -> Self {
        Self {
            target,
            socket: Arc::default(),
            binary: "nft".to_owned(),
        }
    }

    /// Controller for the namespace at `path` (`/proc/<pid>/ns/net`, `/run/netns/<name>`).
    pub fn for_netns(path: impl Into<PathBuf>) -> Self {
        Self::new(Target::Path(path.into()))
    }

    /// Controller for the namespace `fd` refers to (held open by the controller).
    pub fn for_netns_fd(fd: Arc<OwnedFd>) -> Self {
        Self::new(Target::Fd(fd))
    }

    /// Controller for the network namespace of process `pid` (e.g. the cell's init).
    pub fn for_pid(pid: u32) -> Self {
        Self::for_netns(format!("/proc/{pid}/ns/net"))
    }

    /// Controller for the caller's own namespace.
    pub fn current() -> Self {
        Self::new(Target::Current)
    }

    /// Use another `nft` binary for the tool-based calls (an absolute path).
    pub fn with_binary(mut self, binary: impl Into<String>) -> Self {
        self.binary = binary.into();
        self
    }

    pub fn netns(&self) -> Option<&Path> {
        match &self.target {
            Target::Path(p) => Some(p),
            _ => None,
        }
    }

    /// Loads `what` atomically: all of it, or nothing (then the error names the object).
    pub fn apply<L: Load + ?Sized>(&self, what: &L) -> Result<(), NftError> {
        what.load(self)
    }

    /// Applies element updates (pins) to existing sets as one transaction.
    pub fn update_elements(&self, updates: &[ElementUpdate]) -> Result<(), NftError> {
        let requests: Vec<_> = updates.iter().flat_map(nftables::element_update).collect();
        if requests.is_empty() {
            return Ok(());
        }
        self.transact(&requests)
    }

    /// Loads a pooled base: the table without elements, and [`nftables::UNCLAIMED`] last so
    /// the other objects get the handles a full load gives them. One transaction.
    pub fn apply_base(&self, base: &BaseRuleset) -> Result<(), NftError> {
        let t = base.table();
        let mut requests = nftables::encode_table(t);
        requests.push(nftables::new_counter(
            t.family,
            &t.name,
            nftables::UNCLAIMED,
        ));
        self.transact(&requests)
    }

    /// Loads a cell's elements into a ready base in one transaction that also deletes
    /// [`nftables::UNCLAIMED`], so a base already used (or absent) refuses it whole; then
    /// zeroes the table's counters (one NFT_MSG_GETOBJ_RESET dump), so the cell's flow
    /// summary counts only its own packets.
    pub fn apply_cell(&self, part: &CellPart) -> Result<(), NftError> {
        let (family, table) = (part.family(), part.table());
        let mut requests = vec![nftables::delete_counter(family, table, nftables::UNCLAIMED)];
        for set in part.sets() {
            requests.extend(nftables::set_elements(family, table, set));
        }
        match self.transact(&requests) {
            Err(e)
                if e.rejected().is_some_and(|(o, errno)| {
                    errno == Errno::ENOENT && *o == Object::Counter(nftables::UNCLAIMED.to_owned())
                }) =>
            {
                let table = table.to_owned();
                return Err(if self.table_exists(family, &table)? {
                    NftError::BaseClaimed { family, table }
                } else {
                    NftError::NoBase { family, table }
                });
            }
            result => result?,
        }
        self.counter_dump(nftables::GETOBJ_RESET, family, table)
            .map(drop)
    }

    /// Does table `family name` exist?
    pub fn table_exists(&self, family: Family, name: &str) -> Result<bool, NftError> {
        let mut attrs = Attrs::default();
        attrs.str(table::NAME, name);
        match self.with_socket(|s| s.query(nftables::GETTABLE, family, false, attrs.0))? {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(errno) => Err(NetlinkError::Rejected {
                object: Object::Table {
                    family,
                    name: name.to_owned(),
                },
                errno,
            }
            .into()),
        }
    }

    /// Deletes table `family name`; `Ok(false)` when it did not exist.
    pub fn delete_table(&self, family: Family, name: &str) -> Result<bool, NftError> {
        match self.transact(&[nftables::delete_table(family, name)]) {
            Ok(()) => Ok(true),
            Err(e)
                if e.rejected()
                    .is_some_and(|(_, errno)| errno == Errno::ENOENT) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The named counters of the cell's table (`inet cellos`), one NFT_MSG_GETOBJ dump.
    pub fn read_counters(&self) -> Result<NftCounters, NftError> {
        self.counter_dump(nftables::GETOBJ, Family::Inet, TABLE)
    }

    /// The named counters of `family table`, read (GETOBJ) or read and zeroed (GETOBJ_RESET).
    fn counter_dump(&self, op: u8, family: Family, table: &str) -> Result<NftCounters, NftError> {
        let mut attrs = Attrs::default();
        attrs
            .str(obj::TABLE, table)
            .be32(obj::TYPE, obj::TYPE_COUNTER);
        let replies = self
            .with_socket(|s| s.query(op, family, true, attrs.0))?
            .map_err(|errno| NetlinkError::Rejected {
                object: Object::Message("the counter dump"),
                errno,
            })?;
        Ok(NftCounters(
            replies
                .iter()
                .filter_map(|m| parse_counter(&m.attrs))
                .collect(),
        ))
    }

    /// `nft list table inet cellos` as text (runs `nft`; for diagnostics and tests).
    pub fn list_table(&self) -> Result<String, NftError> {
        self.run(&["list", "table", FAMILY, TABLE], None)
    }

    /// `nft -j list table inet cellos`, parsed (runs `nft`).
    pub fn list_table_json(&self) -> Result<serde_json::Value, NftError> {
        let text = self.run(&["-j", "list", "table", FAMILY, TABLE], None)?;
        Ok(serde_json::from_str(&text)?)
    }

    fn transact(&self, requests: &[nftables::Request]) -> Result<(), NftError> {
        self.with_socket(|s| s.transact(requests))
    }

    /// Runs `f` on the controller's socket, opening it in the namespace on first use; a
    /// socket whose send or receive failed is dropped, so the next call opens a fresh one.
    fn with_socket<T>(
        &self,
        f: impl FnOnce(&mut NfSocket) -> Result<T, NetlinkError>,
    ) -> Result<T, NftError> {
        let mut slot = self
            .socket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let socket = match slot.take() {
            Some(s) => s,
            None => NfSocket::open(self.namespace()?)?,
        };
        let socket = slot.insert(socket);
        let result = f(socket);
        if matches!(
            result,
            Err(NetlinkError::Io { .. } | NetlinkError::Decode(_))
        ) {
            *slot = None;
        }
        Ok(result?)
    }

    /// The namespace as a fresh descriptor (`None`: the caller's own).
    fn namespace(&self) -> Result<Option<OwnedFd>, NftError> {
        match &self.target {
            Target::Current => Ok(None),
            Target::Fd(fd) => fd.try_clone().map(Some).map_err(|source| NftError::Netns {
                path: PathBuf::from("(descriptor)"),
                source,
            }),
            Target::Path(path) => std::fs::File::open(path)
                .map(|f| Some(OwnedFd::from(f)))
                .map_err(|source| NftError::Netns {
                    path: path.clone(),
                    source,
                }),
        }
    }

    /// Runs `nft args...` in the namespace, feeding `stdin`; returns stdout.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
        run_tool(&self.binary, args, stdin, self.namespace()?).map_err(|err| match err {
            ToolError::Spawn { source, .. } | ToolError::Wait { source, .. } => NftError::Spawn {
                binary: self.binary.clone(),
                source,
            },
            ToolError::Failed {
                args,
                status,
                stderr,
                ..
            } => NftError::Rejected {
                args,
                status,
                stderr,
            },
        })
    }
}

/// Name and count of one NEWOBJ counter message (NFTA_OBJ_NAME, NFTA_OBJ_DATA).
fn parse_counter(attrs: &[u8]) -> Option<(String, Count)> {
    let mut name = None;
    let mut count = None;
    for nla in NlasIterator::new(attrs) {
        let nla = nla.ok()?;
        match nla.kind() {
            obj::NAME => {
                let v = nla.value();
                let v = v.strip_suffix(&[0]).unwrap_or(v);
                name = Some(String::from_utf8_lossy(v).into_owned());
            }
            obj::DATA => count = Some(parse_count(nla.value())?),
            _ => {}
        }
    }
    Some((name?, count?))
}

fn parse_count(data: &[u8]) -> Option<Count> {
    let mut c = Count::default();
    for nla in NlasIterator::new(data) {
        let nla = nla.ok()?;
        let v = u64::from_be_bytes(nla.value().try_into().ok()?);
        match nla.kind() {
            obj::COUNTER_BYTES => c.bytes = v,
            obj::COUNTER_PACKETS => c.packets = v,
            _ => {}
        }
    }
    Some(c)
}

/// Installs DNS pins into the cell's `pinned_v4/v6` sets, on the ports the plan allows: one
/// NEWSETELEM transaction per call, no process.
#[derive(Debug, Clone)]
pub struct NftPinner {
    pub controller: NftController,
    pub plan: EgressPlan,
}

impl AddressPinner for NftPinner {
    fn pin(&self, pins: &[Pin]) -> Result<(), PinError> {
        self.controller
            .update_elements(&self.plan.pin_updates(pins))
            .map_err(|e| PinError(e.to_string()))
    }
}
