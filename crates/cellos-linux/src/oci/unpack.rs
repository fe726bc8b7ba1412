//! Extracting layer tarballs into a rootfs without ever writing outside it.
//!
//! Layers are untrusted input. Every entry path is checked to be relative with no `..`, and
//! every write is made through directory descriptors opened one component at a time with
//! `O_NOFOLLOW` from the rootfs descriptor: a symlink planted by an earlier entry (say
//! `etc -> /`) can never redirect a later write (`etc/passwd`) to the host. Such an entry is
//! refused rather than resolved, since well-formed layer diffs record real paths and never
//! write below a symlink. The `tar` crate's own `unpack` is not used because it resolves
//! paths through the host filesystem rather than through descriptors.
//!
//! What is deliberately not reproduced:
//! - setuid/setgid bits are stripped (the sticky bit and rwx bits are kept), so an image
//!   cannot smuggle a privilege-raising binary into a cell;
//! - owners stay the unpacking user (root): the cell maps its own users and the rootfs is
//!   bound read-only;
//! - extended attributes (including file capabilities) are not applied;
//! - device nodes and FIFOs are not created; they are listed in the result instead.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use oci_spec::image::{Descriptor, MediaType};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use tar::EntryType;

use super::blobs::{Layout, VerifyingReader};
use super::zstd::ZstdFrames;
use super::OciError;

/// Deepest entry path (in components) we extract; bounds recursion and open descriptors.
const MAX_DEPTH: usize = 256;
/// Permission bits kept on extracted files: rwx for everyone plus sticky. setuid and setgid
/// are dropped.
const KEPT_MODE_BITS: u32 = 0o1777;
/// Marks a whiteout entry: `.wh.<name>` hides `<name>` from lower layers.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Marks an opaque directory: its lower-layer contents are hidden.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// How a layer blob is compressed, from its media type.
enum Compression {
    None,
    Gzip,
    Zstd,
}

fn compression_of(desc: &Descriptor) -> Result<Compression, OciError> {
    match desc.media_type() {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Ok(Compression::None),
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
            Ok(Compression::Gzip)
        }
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
            Ok(Compression::Zstd)
        }
        MediaType::Other(m) if m == "application/vnd.docker.image.rootfs.diff.tar" => {
            Ok(Compression::None)
        }
        MediaType::Other(m)
            if m == "application/vnd.docker.image.rootfs.diff.tar.gzip"
                || m == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" =>
        {
            Ok(Compression::Gzip)
        }
        other => Err(OciError::UnsupportedMediaType {
            what: format!("layer {}", desc.digest()),
            media_type: other.to_string(),
            fix: "layers must be tar, tar+gzip or tar+zstd (application/vnd.oci.image.layer.v1.*)"
                .to_string(),
        }),
    }
}

/// Verifies a layer blob, then extracts it onto `root` (a directory descriptor), applying
/// whiteouts. Special files that were not created are appended to `skipped`.
pub(crate) fn apply_layer(
    layout: &Layout,
    desc: &Descriptor,
    root: &OwnedFd,
    skipped: &mut Vec<String>,
) -> Result<(), OciError> {
    let layer = desc.digest().to_string();
    let compression = compression_of(desc)?;
    let file = layout.open_verified_blob("layer", desc)?;
    // The blob is hashed again as it streams, so a change after the first pass is caught.
    let mut verifier = VerifyingReader::new(BufReader::new(file));
    let read_err = |source| OciError::io(format!("reading layer {layer}"), source);
    {
        let decoded: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(&mut verifier),
            Compression::Gzip => Box::new(MultiGzDecoder::new(&mut verifier)),
            Compression::Zstd => Box::new(ZstdFrames::new(BufReader::new(&mut verifier))),
        };
        let mut archive = tar::Archive::new(decoded);
        let mut unpacker = Unpacker {
            root,
            layer: &layer,
            touched: HashSet::new(),
            hidden: Vec::new(),
            skipped,
        };
        let entries = archive.entries().map_err(read_err)?;
        for entry in entries {
            unpacker.entry(entry.map_err(read_err)?)?;
        }
        unpacker.apply_whiteouts()?;
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(read_err)?;
    }
    io::copy(&mut verifier, &mut io::sink()).map_err(read_err)?;
    verifier.verify(desc)
}

/// What a whiteout hides once the layer's own entries are in place.
enum Hidden {
    /// `.wh.<name>`: the path itself.
    Path(PathBuf),
    /// `.wh..wh..opq`: everything inside the directory.
    Children(PathBuf),
}

/// Why an entry could not be extracted, before layer and entry names are attached.
enum Refusal {
    Unsafe(String),
    Unsupported { kind: String, fix: String },
    Io(String, io::Error),
}

impl From<Errno> for Refusal {
    fn from(errno: Errno) -> Self {
        Refusal::Io("system call".to_string(), errno.into())
    }
}

fn io_step(what: impl Into<String>) -> impl FnOnce(Errno) -> Refusal {
    let what = what.into();
    move |errno| Refusal::Io(what, errno.into())
}

struct Unpacker<'a> {
    root: &'a OwnedFd,
    layer: &'a str,
    /// Paths this layer wrote (and their ancestors); whiteouts only hide what lies below.
    touched: HashSet<PathBuf>,
    hidden: Vec<Hidden>,
    skipped: &'a mut Vec<String>,
}

impl Unpacker<'_> {
    fn refusal(&self, entry: &str, refusal: Refusal) -> OciError {
        match refusal {
            Refusal::Unsafe(reason) => OciError::UnsafeEntry {
                layer: self.layer.to_string(),
                entry: entry.to_string(),
                reason,
            },
            Refusal::Unsupported { kind, fix } => OciError::UnsupportedEntry {
                layer: self.layer.to_string(),
                entry: entry.to_string(),
                kind,
                fix,
            },
            Refusal::Io(what, source) => OciError::io(
                format!("layer {}: extracting '{entry}': {what}", self.layer),
                source,
            ),
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), OciError> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        self.extract(&mut entry, &raw, &name)
            .map_err(|refusal| self.refusal(&name, refusal))
    }

    fn extract<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        name: &str,
    ) -> Result<(), Refusal> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let rel = safe_relative(raw).map_err(Refusal::Unsafe)?;
        let Some(file_name) = rel.file_name() else {
            // The archive root ("./"): the rootfs directory itself, already there.
            return if kind.is_dir() {
                Ok(())
            } else {
                Err(Refusal::Unsafe(
                    "a non-directory entry names the rootfs itself".into(),
                ))
            };
        };
        if let Some(hidden) = file_name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&rel, hidden);
        }
        let mode = entry
            .header()
            .mode()
            .map_err(|e| Refusal::Io("reading mode".into(), e))?
            & KEPT_MODE_BITS;
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let parent = self.parent(&rel, true)?;
                write_file(&parent, file_name, entry, mode)?;
            }
            EntryType::Directory => {
                let parent = self.parent(&rel, true)?;
                make_dir(&parent, file_name, mode)?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| Refusal::Unsafe("symlink has no target".into()))?
                    .into_owned();
                let parent = self.parent(&rel, true)?;
                remove_existing(&parent, file_name, false)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, file_name)
                    .map_err(io_step("creating symlink"))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Refusal::Unsafe("hardlink has no target".into()))?
                    .into_owned();
                self.hardlink(&rel, &target)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.skipped
                    .push(format!("{name} ({kind:?} in layer {})", self.layer));
                return Ok(());
            }
            other => {
                return Err(Refusal::Unsupported {
                    kind: format!("{other:?} tar entry"),
                    fix: "rebuild the layer with plain files, directories and links (no sparse \
                          or vendor-specific entries)"
                        .into(),
                })
            }
        }
        self.touch(&rel);
        Ok(())
    }

    /// Opens the directory that holds `rel`, creating missing directories when `create`.
    fn parent(&self, rel: &Path, create: bool) -> Result<OwnedFd, Refusal> {
        self.walk(rel.parent().unwrap_or(Path::new("")), create)?
            .ok_or_else(|| Refusal::Unsafe("a parent directory does not exist".into()))
    }

    /// Opens directory `rel` below the root one component at a time, never following a
    /// symlink. `None` when a component is missing and `create` is false.
    fn walk(&self, rel: &Path, create: bool) -> Result<Option<OwnedFd>, Refusal> {
        let mut dir = open_dir(self.root, OsStr::new(".")).map_err(io_step("opening rootfs"))?;
        let mut prefix = PathBuf::new();
        for component in rel.iter() {
            prefix.push(component);
            dir = match open_dir(&dir, component) {
                Ok(next) => next,
                Err(Errno::NOENT) if create => {
                    rustix::fs::mkdirat(&dir, component, Mode::from_raw_mode(0o755)).map_err(
                        io_step(format!("creating directory '{}'", prefix.display())),
                    )?;
                    open_dir(&dir, component)
                        .map_err(io_step(format!("opening '{}'", prefix.display())))?
                }
                Err(Errno::NOENT) => return Ok(None),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(Refusal::Unsafe(match file_type(&dir, component)? {
                        Some(FileType::Symlink) => format!(
                            "'{}' is a symlink; writing through it could leave the rootfs \
                             (layers must not write below a symlink: rebuild the layer so it \
                             records the real path)",
                            prefix.display()
                        ),
                        _ => format!("'{}' is not a directory", prefix.display()),
                    }))
                }
                Err(errno) => {
                    return Err(Refusal::Io(
                        format!("opening '{}'", prefix.display()),
                        errno.into(),
                    ))
                }
            };
        }
        Ok(Some(dir))
    }

    fn hardlink(&self, rel: &Path, raw_target: &[u8]) -> Result<(), Refusal> {
        let target = safe_relative(raw_target)
            .map_err(|reason| Refusal::Unsafe(format!("hardlink target: {reason}")))?;
        let (Some(target_name), Some(link_name)) = (target.file_name(), rel.file_name()) else {
            return Err(Refusal::Unsafe("hardlink to the rootfs itself".into()));
        };
        if target == rel {
            return Ok(());
        }
        let missing = || {
            Refusal::Unsafe(format!(
                "hardlink target '{}' does not exist in the rootfs (links must point at a file \
                 extracted earlier)",
                target.display()
            ))
        };
        let target_dir = self
            .walk(target.parent().unwrap_or(Path::new("")), false)?
            .ok_or_else(missing)?;
        match file_type(&target_dir, target_name)? {
            None => return Err(missing()),
            Some(FileType::Directory) => {
                return Err(Refusal::Unsafe("hardlink target is a directory".into()))
            }
            Some(_) => {}
        }
        let link_dir = self.parent(rel, true)?;
        remove_existing(&link_dir, link_name, false)?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        rustix::fs::linkat(
            &target_dir,
            target_name,
            &link_dir,
            link_name,
            AtFlags::empty(),
        )
        .map_err(io_step("creating hardlink"))
    }

    fn whiteout(&mut self, rel: &Path, hidden: &[u8]) -> Result<(), Refusal> {
        let dir = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        self.touch_ancestors(rel);
        if rel.file_name().map(OsStrExt::as_bytes) == Some(OPAQUE_MARKER) {
            self.hidden.push(Hidden::Children(dir));
        } else if hidden.starts_with(WHITEOUT_PREFIX) {
            // Other `.wh..wh.*` names are AUFS bookkeeping with nothing to apply.
        } else if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(Refusal::Unsafe("whiteout names no file".into()));
        } else {
            self.hidden
                .push(Hidden::Path(dir.join(OsStr::from_bytes(hidden))));
        }
        Ok(())
    }

    /// Removes what whiteouts hide. Done after the layer's entries so that the order of
    /// whiteouts and entries inside the tar does not matter: only content from lower layers
    /// (paths this layer did not write) is removed.
    fn apply_whiteouts(&mut self) -> Result<(), OciError> {
        for hidden in std::mem::take(&mut self.hidden) {
            let (result, path) = match hidden {
                Hidden::Path(path) => (self.remove_lower(&path), path),
                Hidden::Children(dir) => (self.remove_lower_children(&dir), dir),
            };
            result.map_err(|refusal| {
                self.refusal(&format!("whiteout of {}", path.display()), refusal)
            })?;
        }
        Ok(())
    }

    /// Removes `rel` if this layer did not write it; otherwise removes what lies below it
    /// that this layer did not write.
    fn remove_lower(&self, rel: &Path) -> Result<(), Refusal> {
        let Some(name) = rel.file_name() else {
            return Ok(());
        };
        let Some(dir) = self.walk(rel.parent().unwrap_or(Path::new("")), false)? else {
            return Ok(());
        };
        match file_type(&dir, name)? {
            None => Ok(()),
            Some(_) if !self.touched.contains(rel) => remove_existing(&dir, name, false),
            Some(FileType::Directory) => self.remove_lower_children(rel),
            Some(_) => Ok(()),
        }
    }

    fn remove_lower_children(&self, rel: &Path) -> Result<(), Refusal> {
        let Some(dir) = self.walk(rel, false)? else {
            return Ok(());
        };
        for child in list_dir(&dir)? {
            self.remove_lower(&rel.join(child))?;
        }
        Ok(())
    }

    fn touch(&mut self, rel: &Path) {
        self.touched.insert(rel.to_path_buf());
        self.touch_ancestors(rel);
    }

    fn touch_ancestors(&mut self, rel: &Path) {
        for ancestor in rel.ancestors().skip(1) {
            if ancestor.as_os_str().is_empty() || !self.touched.insert(ancestor.to_path_buf()) {
                break;
            }
        }
    }
}

/// Turns a tar path into a relative path of plain components, or says why it cannot be one.
fn safe_relative(raw: &[u8]) -> Result<PathBuf, String> {
    let mut rel = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err("absolute path; layer paths must be relative to the rootfs".into())
            }
            Component::ParentDir => {
                return Err("path contains '..', which could leave the rootfs".into())
            }
        }
    }
    if rel.components().count() > MAX_DEPTH {
        return Err(format!("path is deeper than {MAX_DEPTH} components"));
    }
    Ok(rel)
}

fn open_dir(dir: impl AsFd, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The type of `name` in `dir` without following a symlink; `None` when absent.
fn file_type(dir: impl AsFd, name: &OsStr) -> Result<Option<FileType>, Refusal> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(FileType::from_raw_mode(stat.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(errno) => Err(Refusal::Io(
            format!("inspecting '{}'", Path::new(name).display()),
            errno.into(),
        )),
    }
}

fn list_dir(dir: &OwnedFd) -> Result<Vec<OsString>, Refusal> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// Clears the way for a new entry at `name`. An existing directory is kept when the new
/// entry is a directory too (`keep_dir`), as layers merge directories.
fn remove_existing(dir: &OwnedFd, name: &OsStr, keep_dir: bool) -> Result<(), Refusal> {
    match file_type(dir, name)? {
        None => Ok(()),
        Some(FileType::Directory) if keep_dir => Ok(()),
        Some(FileType::Directory) => remove_tree(dir, name, 0),
        Some(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty())
            .map_err(io_step(format!("removing '{}'", Path::new(name).display()))),
    }
}

/// Removes directory `name` in `dir` and everything in it, without following symlinks.
fn remove_tree(dir: &OwnedFd, name: &OsStr, depth: usize) -> Result<(), Refusal> {
    if depth > MAX_DEPTH {
        return Err(Refusal::Unsafe(format!(
            "directory tree deeper than {MAX_DEPTH} levels"
        )));
    }
    let inner = open_dir(dir, name).map_err(io_step("opening directory to remove"))?;
    for child in list_dir(&inner)? {
        match file_type(&inner, &child)? {
            Some(FileType::Directory) => remove_tree(&inner, &child, depth + 1)?,
            Some(_) => rustix::fs::unlinkat(&inner, &child, AtFlags::empty())
                .map_err(io_step("removing file"))?,
            None => {}
        }
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(io_step("removing directory"))
}

/// Writes a regular file as a fresh inode: an existing file is unlinked, never truncated,
/// so hardlinked siblings from lower layers keep their content.
fn write_file(dir: &OwnedFd, name: &OsStr, data: &mut impl Read, mode: u32) -> Result<(), Refusal> {
    remove_existing(dir, name, false)?;
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(io_step("creating file"))?;
    let mut file = File::from(fd);
    io::copy(data, &mut file).map_err(|e| Refusal::Io("writing file".into(), e))?;
    rustix::fs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(io_step("setting mode"))
}

fn make_dir(dir: &OwnedFd, name: &OsStr, mode: u32) -> Result<(), Refusal> {
    remove_existing(dir, name, true)?;
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(errno) => return Err(Refusal::Io("creating directory".into(), errno.into())),
    }
    let fd = open_dir(dir, name).map_err(io_step("opening directory"))?;
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(io_step("setting mode"))
}
