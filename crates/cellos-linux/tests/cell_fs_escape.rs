//! `CellFs` against the real kernel: nothing done through a cell path reaches the host.
//!
//! Each test builds a fake cell root in a temporary directory (owned by an unprivileged
//! "workload" uid/gid, mode 0755) next to a "host" directory holding a canary file. The host
//! directory and canary are owned by the workload ids too, so only containment — not file
//! permissions — keeps them safe. After every attempt the host side is checked. Needs root
//! (skips otherwise).

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cellos_core::ports::{PortError, PortErrorKind};
use cellos_core::session::FileKind;
use cellos_linux::cell_fs::{CellFs, CellFsError};
use rustix::fs::{Mode, OFlags};
use sha2::{Digest, Sha256};

const UID: u32 = 0x7000_0000 + 1000;
const GID: u32 = 0x7000_0000 + 1000;
const CANARY: &[u8] = b"HOST-CANARY-do-not-touch";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

struct Fixture {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    host: PathBuf,
    fs: CellFs,
    base_before: BTreeSet<String>,
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn open_root(root: &Path) -> OwnedFd {
    rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap()
}

impl Fixture {
    fn new() -> Self {
        // /dev/shm: tmpfs, so the many fsyncs of the race tests are cheap.
        let tmp = tempfile::Builder::new()
            .prefix("cellfs-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let base = tmp.path().to_path_buf();
        // Searchable by the workload ids, so that an escape would not be stopped by DAC.
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        let root = base.join("root");
        let host = base.join("host");
        for d in [&root, &root.join("etc"), &root.join("workspace"), &host] {
            fs::create_dir(d).unwrap();
            fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
            chown(d, UID, GID);
        }
        fs::write(root.join("etc/passwd"), b"cell passwd\n").unwrap();
        chown(&root.join("etc/passwd"), UID, GID);
        fs::write(host.join("canary.txt"), CANARY).unwrap();
        chown(&host.join("canary.txt"), UID, GID);
        let fs_ = CellFs::new(open_root(&root), UID, GID);
        let base_before = names(&base);
        Fixture {
            _tmp: tmp,
            base,
            root,
            host,
            fs: fs_,
            base_before,
        }
    }

    fn symlink(&self, target: impl AsRef<Path>, link: &str) {
        let l = self.root.join(link.trim_start_matches('/'));
        std::os::unix::fs::symlink(target, &l).unwrap();
        chown(&l, UID, GID);
    }

    /// The host side is exactly as it was: canary unchanged, nothing new beside the root.
    fn assert_host_untouched(&self) {
        assert_eq!(fs::read(self.host.join("canary.txt")).unwrap(), CANARY);
        assert_eq!(
            names(&self.host),
            BTreeSet::from(["canary.txt".to_string()])
        );
        assert_eq!(names(&self.base), self.base_before);
    }
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn write(
    fs: &CellFs,
    path: &str,
    data: &[u8],
) -> Result<cellos_core::session::FileWritten, CellFsError> {
    fs.write(path, &mut &data[..], None, 1 << 30)
}

fn read(fs: &CellFs, path: &str) -> Result<Vec<u8>, CellFsError> {
    fs.read_to_vec(path, 1 << 30).map(|(_, v)| v)
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Unmounts (lazily) when dropped, also when the test fails.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

// 1 + 3: symlinks to the host's `/`, to the host canary directory (standing in for the host's
// CellOS home) and relative ones climbing out all resolve inside the cell's root.
#[test]
fn symlinks_to_host_paths_stay_in_the_root() {
    need_root!();
    let f = Fixture::new();
    f.symlink("/", "/hostroot");
    f.symlink(&f.host, "/hostdir");
    f.symlink(f.host.join("canary.txt"), "/hostcanary");
    f.symlink("../../../../../host", "/workspace/up");

    // Through the link to the host canary directory: it names <root><host path>, which is
    // not there.
    assert!(matches!(
        read(&f.fs, "/hostdir/canary.txt"),
        Err(CellFsError::NotFound { .. })
    ));
    assert!(matches!(
        write(&f.fs, "/hostdir/canary.txt", b"pwned"),
        Err(CellFsError::NotFound { .. })
    ));
    assert!(matches!(
        write(&f.fs, "/hostdir/new.txt", b"pwned"),
        Err(CellFsError::NotFound { .. })
    ));
    assert!(matches!(
        f.fs.list("/hostdir/."),
        Err(CellFsError::IsASymlink { .. })
    ));
    assert!(matches!(
        f.fs.remove("/hostdir/canary.txt", false),
        Err(CellFsError::NotFound { .. })
    ));
    f.assert_host_untouched();

    // The link to the canary file itself is not followed.
    assert!(matches!(
        read(&f.fs, "/hostcanary"),
        Err(CellFsError::IsASymlink { .. })
    ));
    // Writing onto it replaces the link inside the cell, not the host file.
    write(&f.fs, "/hostcanary", b"replaced").unwrap();
    assert_eq!(fs::read(f.root.join("hostcanary")).unwrap(), b"replaced");
    f.assert_host_untouched();

    // Through the link to `/`: the cell's own files.
    assert_eq!(
        read(&f.fs, "/hostroot/etc/passwd").unwrap(),
        b"cell passwd\n"
    );
    let host_path = f.host.join("canary.txt");
    let via_root = format!("/hostroot{}", host_path.display());
    assert!(matches!(
        read(&f.fs, &via_root),
        Err(CellFsError::NotFound { .. })
    ));
    assert!(matches!(
        write(&f.fs, &via_root, b"pwned"),
        Err(CellFsError::NotFound { .. })
    ));
    let marker = format!("cellfs-escape-{}", std::process::id());
    write(&f.fs, &format!("/hostroot/{marker}"), b"in the cell").unwrap();
    assert!(f.root.join(&marker).exists());
    assert!(!Path::new("/").join(&marker).exists());
    f.assert_host_untouched();

    // Relative links climbing with `..` stop at the root.
    assert!(matches!(
        read(&f.fs, "/workspace/up/canary.txt"),
        Err(CellFsError::NotFound { .. })
    ));
    assert!(matches!(
        write(&f.fs, "/workspace/up/x", b"pwned"),
        Err(CellFsError::NotFound { .. })
    ));

    // mkdir through the link builds the host path's mirror inside the root, and writes land
    // there.
    f.fs.mkdir(&format!("/hostroot{}", f.host.display()), true)
        .unwrap();
    write(&f.fs, "/hostdir/canary.txt", b"cell copy").unwrap();
    let mirror = f
        .root
        .join(f.host.strip_prefix("/").unwrap())
        .join("canary.txt");
    assert_eq!(fs::read(&mirror).unwrap(), b"cell copy");
    assert_eq!(read(&f.fs, "/hostdir/canary.txt").unwrap(), b"cell copy");
    let err = read(&f.fs, "/workspace/up/canary.txt").unwrap_err();
    assert!(matches!(err, CellFsError::NotFound { .. }));
    assert!(err.to_string().contains("/workspace/up/canary.txt"));
    f.assert_host_untouched();
}

// 2: magic links (/proc/*/root, /proc/*/fd/*) are refused, also for a workload running as root.
#[test]
fn magic_links_are_refused() {
    need_root!();
    let f = Fixture::new();
    let proc_dir = f.root.join("proc");
    fs::create_dir(&proc_dir).unwrap();
    rustix::mount::mount(
        "proc",
        &proc_dir,
        "proc",
        rustix::mount::MountFlags::empty(),
        "",
    )
    .unwrap();
    let _guard = MountGuard(proc_dir.clone());
    // A process of the workload's own uid: its /proc entry is accessible to the workload, so
    // only the magic-link rule refuses it.
    let child = std::process::Command::new("sleep")
        .arg("60")
        .uid(UID)
        .gid(GID)
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    let child_root = format!("/proc/{}/root", child.0.id());
    f.symlink("/proc/1/root", "/p1");
    f.symlink("/proc/self/root", "/pself");
    f.symlink("/proc/thread-self/root", "/pthread");
    f.symlink(&child_root, "/pchild");

    // As root (the strongest workload) and as the workload's uid.
    let as_root = CellFs::new(open_root(&f.root), 0, 0);
    let child_passwd = format!("{child_root}/etc/passwd");
    for cell_fs in [&as_root, &f.fs] {
        let uid = cell_fs.ids().uid;
        for p in [
            "/p1/etc/passwd",
            "/pself/etc/passwd",
            "/pthread/etc/passwd",
            "/pchild/etc/passwd",
            child_passwd.as_str(),
            "/proc/1/root/etc/passwd",
            "/proc/self/root/etc/passwd",
            "/proc/thread-self/root/etc/passwd",
            "/proc/self/cwd/etc/passwd",
            "/proc/thread-self/fd/0/x",
        ] {
            // /proc itself may refuse first (EACCES) for a process the operation's ids may not
            // inspect: the host's pid 1 (here even for root), and the supervisor's root-owned
            // main thread for the workload's uid. Refused either way.
            let may_deny = p.contains("p1")
                || p.contains("/proc/1/")
                || (uid != 0 && (p.contains("pself") || p.contains("/proc/self/")));
            let err = read(cell_fs, p).unwrap_err();
            let refused = PortError::from(match &err {
                CellFsError::Escape { .. } => err,
                CellFsError::PermissionDenied { .. } if may_deny => err,
                other => panic!("{p} as uid {uid}: {other:?}"),
            });
            assert_eq!(refused.kind, PortErrorKind::Refused);
            let err = write(cell_fs, &p.replace("etc/passwd", "tmp-x"), b"pwned").unwrap_err();
            assert!(
                matches!(
                    err,
                    CellFsError::Escape { .. } | CellFsError::PermissionDenied { .. }
                ),
                "{p}: {err:?}"
            );
            assert!(cell_fs.list(&p.replace("/etc/passwd", "")).is_err());
        }
        // Exactly Escape where nothing but the magic-link rule refuses.
        assert!(matches!(
            read(cell_fs, "/pthread/etc/passwd"),
            Err(CellFsError::Escape { .. })
        ));
        assert!(matches!(
            read(cell_fs, "/proc/thread-self/root/etc/passwd"),
            Err(CellFsError::Escape { .. })
        ));
        assert!(matches!(
            cell_fs.mkdir("/proc/thread-self/root/tmp/x", true),
            Err(CellFsError::Escape { .. })
        ));
        // The links themselves can be looked at, never followed.
        let st = cell_fs.stat("/p1").unwrap();
        assert_eq!(st.kind, FileKind::Symlink);
        assert_eq!(st.link_target.as_deref(), Some("/proc/1/root"));
        assert!(matches!(
            read(cell_fs, "/p1"),
            Err(CellFsError::IsASymlink { .. })
        ));
    }
    let err = read(&f.fs, &child_passwd).unwrap_err();
    assert!(matches!(err, CellFsError::Escape { .. }), "{err:?}");
    assert!(err.to_string().contains(&child_passwd));
    assert!(!Path::new("/tmp-x").exists());
    f.assert_host_untouched();
}

// 4: `..` chains resolve inside the root.
#[test]
fn dotdot_chains_stay_in_the_root() {
    need_root!();
    let f = Fixture::new();
    assert_eq!(
        read(&f.fs, "/../../../../etc/passwd").unwrap(),
        b"cell passwd\n"
    );
    assert_eq!(
        read(&f.fs, "/workspace/../../../etc/../etc/passwd").unwrap(),
        b"cell passwd\n"
    );
    // The kernel resolves `a/..` by looking `a` up: missing, it is NotFound (not an escape).
    assert!(matches!(
        f.fs.stat("/a/../../.."),
        Err(CellFsError::NotFound { .. })
    ));
    f.fs.mkdir("/a", false).unwrap();
    assert_eq!(f.fs.stat("/a/../../..").unwrap().kind, FileKind::Directory);
    assert_eq!(
        read(&f.fs, "/a/../../../etc/passwd").unwrap(),
        b"cell passwd\n"
    );
    let st = f.fs.stat("/workspace/../../..").unwrap();
    assert_eq!(st.kind, FileKind::Directory);
    let top: Vec<String> =
        f.fs.list("/workspace/../../..")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
    assert_eq!(
        top,
        vec!["a".to_string(), "etc".to_string(), "workspace".to_string()]
    );
    write(&f.fs, "/../../../../x.txt", b"top").unwrap();
    assert_eq!(fs::read(f.root.join("x.txt")).unwrap(), b"top");
    assert!(matches!(
        write(&f.fs, "/workspace/../../host/canary.txt", b"pwned"),
        Err(CellFsError::NotFound { .. })
    ));
    assert!(matches!(
        f.fs.remove("/../host/canary.txt", false),
        Err(CellFsError::NotFound { .. })
    ));
    assert!(matches!(
        f.fs.remove("/workspace/..", true),
        Err(CellFsError::InvalidPath { .. })
    ));
    f.fs.mkdir("/../../made", true).unwrap();
    assert!(f.root.join("made").is_dir());
    f.assert_host_untouched();
}

// 5: a directory swapped for a symlink to the host, over and over, while writing through it.
#[test]
fn swapping_a_directory_for_a_symlink_never_redirects() {
    need_root!();
    let f = Fixture::new();
    let race = f.root.join("race");
    fs::create_dir(&race).unwrap();
    chown(&race, UID, GID);
    fs::write(race.join("canary.txt"), b"cell side").unwrap();
    chown(&race.join("canary.txt"), UID, GID);
    f.symlink(&f.host, "/race_link");

    let stop = Arc::new(AtomicBool::new(false));
    let root_dir =
        rustix::fs::open(&f.root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    let swapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    &root_dir,
                    "race",
                    &root_dir,
                    "race_link",
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let (mut written, mut refused) = (0, 0);
    for i in 0..3000u32 {
        match write(&f.fs, "/race/x", format!("{i}").as_bytes()) {
            Ok(_) => written += 1,
            Err(CellFsError::NotFound { .. }) => refused += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
        if i.is_multiple_of(4) {
            match read(&f.fs, "/race/canary.txt") {
                Ok(data) => assert_eq!(data, b"cell side"),
                Err(CellFsError::NotFound { .. }) => {}
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        let _ = f.fs.remove("/race/x", false);
        assert!(
            !f.host.join("x").exists(),
            "write {i} reached the host directory"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!("race: {written} written, {refused} refused, {swaps} swaps");
    assert!(written > 0 && swaps > 0);
    f.assert_host_untouched();
}

// 6: over-long paths are refused before anything is touched; deep legal nesting works.
#[test]
fn long_paths_are_refused_and_deep_ones_work() {
    need_root!();
    let f = Fixture::new();
    let long = format!("/{}", "a".repeat(5000));
    let long_comp = format!("/workspace/{}", "n".repeat(256));
    let many = format!("/workspace{}", "/d".repeat(2100));
    for p in [
        long.as_str(),
        long_comp.as_str(),
        many.as_str(),
        "",
        "relative/x",
        "/a\0b",
    ] {
        let invalid = |r: Result<(), CellFsError>| match r {
            Err(CellFsError::InvalidPath { .. }) => {}
            other => panic!("{:?}: {other:?}", &p[..p.len().min(40)]),
        };
        invalid(read(&f.fs, p).map(drop));
        invalid(write(&f.fs, p, b"x").map(drop));
        invalid(f.fs.stat(p).map(drop));
        invalid(f.fs.list(p).map(drop));
        invalid(f.fs.mkdir(p, true));
        invalid(f.fs.remove(p, true));
    }
    assert!(matches!(
        write(&f.fs, "/", b"x"),
        Err(CellFsError::InvalidPath { .. })
    ));
    assert!(matches!(
        f.fs.remove("/", true),
        Err(CellFsError::InvalidPath { .. })
    ));

    // 300 levels deep.
    let deep = format!("/workspace/deep{}", "/d".repeat(300));
    f.fs.mkdir(&deep, true).unwrap();
    write(&f.fs, &format!("{deep}/f"), b"deep").unwrap();
    assert_eq!(read(&f.fs, &format!("{deep}/f")).unwrap(), b"deep");
    // Near PATH_MAX with NAME_MAX components.
    let wide = format!("/workspace{}", format!("/{}", "w".repeat(255)).repeat(15));
    assert!(wide.len() < 4096);
    f.fs.mkdir(&wide, true).unwrap();
    write(&f.fs, &format!("{wide}/f"), b"wide").unwrap();
    assert_eq!(f.fs.stat(&format!("{wide}/f")).unwrap().size, 4);
    f.fs.remove("/workspace/deep", true).unwrap();
    f.fs.remove(&format!("/workspace/{}", "w".repeat(255)), true)
        .unwrap();
    assert!(f.fs.list("/workspace").unwrap().is_empty());
    f.assert_host_untouched();
}

// 7: read-only mounts inside the root stay read-only.
#[test]
fn read_only_mounts_refuse_writes() {
    need_root!();
    let f = Fixture::new();
    let ro = f.root.join("ro");
    fs::create_dir(&ro).unwrap();
    use rustix::mount::MountFlags;
    rustix::mount::mount(
        "tmpfs",
        &ro,
        "tmpfs",
        MountFlags::empty(),
        "mode=0777,size=1m",
    )
    .unwrap();
    let _guard = MountGuard(ro.clone());
    fs::write(ro.join("keep"), b"kept").unwrap();
    chown(&ro.join("keep"), UID, GID);
    rustix::mount::mount_remount(&ro, MountFlags::RDONLY, "").unwrap();

    let err = write(&f.fs, "/ro/x", b"x").unwrap_err();
    assert!(matches!(err, CellFsError::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains("/ro/x"));
    assert_eq!(PortError::from(err).kind, PortErrorKind::Refused);
    assert!(matches!(
        write(&f.fs, "/ro/keep", b"x"),
        Err(CellFsError::ReadOnly { .. })
    ));
    assert!(matches!(
        f.fs.mkdir("/ro/d", false),
        Err(CellFsError::ReadOnly { .. })
    ));
    assert!(matches!(
        f.fs.mkdir("/ro/d/e", true),
        Err(CellFsError::ReadOnly { .. })
    ));
    assert!(matches!(
        f.fs.remove("/ro/keep", false),
        Err(CellFsError::ReadOnly { .. })
    ));
    assert_eq!(read(&f.fs, "/ro/keep").unwrap(), b"kept");
    assert_eq!(names(&ro), BTreeSet::from(["keep".to_string()]));
    f.assert_host_untouched();
}

// 8: the operation runs as the workload: root-only files stay closed, new files are theirs.
#[test]
fn operations_run_as_the_workload() {
    need_root!();
    let f = Fixture::new();
    let secret = f.root.join("workspace/secret");
    fs::write(&secret, b"root only").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let err = read(&f.fs, "/workspace/secret").unwrap_err();
    assert!(
        matches!(err, CellFsError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("/workspace/secret"));
    // stat only needs search permission on the directory.
    assert_eq!(f.fs.stat("/workspace/secret").unwrap().mode, 0o600);

    let closed = f.root.join("closed");
    fs::create_dir(&closed).unwrap();
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o700)).unwrap();
    assert!(matches!(
        f.fs.list("/closed"),
        Err(CellFsError::PermissionDenied { .. })
    ));
    assert!(matches!(
        write(&f.fs, "/closed/x", b"x"),
        Err(CellFsError::PermissionDenied { .. })
    ));
    assert!(matches!(
        f.fs.mkdir("/closed/d", false),
        Err(CellFsError::PermissionDenied { .. })
    ));
    fs::write(closed.join("f"), b"f").unwrap();
    assert!(matches!(
        f.fs.remove("/closed", true),
        Err(CellFsError::PermissionDenied { .. })
    ));
    assert!(matches!(
        f.fs.remove("/closed/f", false),
        Err(CellFsError::PermissionDenied { .. })
    ));
    assert!(closed.join("f").exists());
    // The root directory is the workload's, /etc/passwd too, but a root-owned file in a
    // root-owned directory cannot be replaced.
    let sys = f.root.join("sys");
    fs::create_dir(&sys).unwrap();
    fs::write(sys.join("conf"), b"c").unwrap();
    assert!(matches!(
        write(&f.fs, "/sys/conf", b"x"),
        Err(CellFsError::PermissionDenied { .. })
    ));
    assert_eq!(fs::read(sys.join("conf")).unwrap(), b"c");

    write(&f.fs, "/workspace/mine", b"mine").unwrap();
    f.fs.mkdir("/workspace/mydir", false).unwrap();
    for p in ["workspace/mine", "workspace/mydir"] {
        let md = fs::metadata(f.root.join(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (UID, GID), "{p}");
    }
    assert_eq!(
        fs::metadata(f.root.join("workspace/mine")).unwrap().mode() & 0o7777,
        0o644
    );
    assert_eq!(
        fs::metadata(f.root.join("workspace/mydir")).unwrap().mode() & 0o7777,
        0o755
    );
    f.assert_host_untouched();
}

// 9: size caps on write and read; an overflowing write leaves nothing behind.
#[test]
fn size_caps() {
    need_root!();
    let f = Fixture::new();
    let data = vec![b'z'; 1001];
    let err =
        f.fs.write("/workspace/big", &mut &data[..], None, 1000)
            .unwrap_err();
    assert!(
        matches!(err, CellFsError::TooLarge { limit: 1000, .. }),
        "{err:?}"
    );
    assert_eq!(PortError::from(err).kind, PortErrorKind::TooLarge);
    assert!(names(&f.root.join("workspace")).is_empty(), "residue left");
    // An endless input stops at the cap.
    let err =
        f.fs.write("/workspace/big", &mut std::io::repeat(b'x'), None, 1 << 20)
            .unwrap_err();
    assert!(matches!(err, CellFsError::TooLarge { .. }));
    assert!(names(&f.root.join("workspace")).is_empty(), "residue left");
    // Replacing an existing file with too much keeps the old one.
    write(&f.fs, "/workspace/big", b"old").unwrap();
    assert!(f
        .fs
        .write("/workspace/big", &mut &data[..], None, 1000)
        .is_err());
    assert_eq!(
        names(&f.root.join("workspace")),
        BTreeSet::from(["big".to_string()])
    );
    assert_eq!(fs::read(f.root.join("workspace/big")).unwrap(), b"old");
    // Exactly the cap is fine.
    let w =
        f.fs.write("/workspace/big", &mut &data[..1000], None, 1000)
            .unwrap();
    assert_eq!(w.size, 1000);

    assert!(matches!(
        f.fs.read("/workspace/big", 999),
        Err(CellFsError::TooLarge { limit: 999, .. })
    ));
    assert!(matches!(
        f.fs.read_to_vec("/workspace/big", 999),
        Err(CellFsError::TooLarge { .. })
    ));
    let (st, mut file) = f.fs.read("/workspace/big", 1000).unwrap();
    assert_eq!(st.size, 1000);
    let mut buf = Vec::new();
    file.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, data[..1000]);
    f.assert_host_untouched();
}

// 10: replacement is atomic: a concurrent reader sees all of one version, never a mix.
#[test]
fn writes_replace_atomically() {
    need_root!();
    let f = Arc::new(Fixture::new());
    const SIZE: usize = 1 << 20;
    write(&f.fs, "/workspace/big", &vec![b'a'; SIZE]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (f, stop) = (f.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let data = if reads.is_multiple_of(2) {
                    fs::read(f.root.join("workspace/big")).unwrap()
                } else {
                    read(&f.fs, "/workspace/big").unwrap()
                };
                assert_eq!(data.len(), SIZE, "partial file seen");
                assert!(data[0] == b'a' || data[0] == b'b');
                assert!(data.iter().all(|&c| c == data[0]), "mixed file seen");
                reads += 1;
            }
            reads
        })
    };
    let (a, b) = (vec![b'a'; SIZE], vec![b'b'; SIZE]);
    let (sha_a, sha_b) = (sha_hex(&a), sha_hex(&b));
    for i in 0..30u32 {
        let (data, sha) = if i.is_multiple_of(2) {
            (&b, &sha_b)
        } else {
            (&a, &sha_a)
        };
        let w = write(&f.fs, "/workspace/big", data).unwrap();
        assert_eq!(w.size, SIZE as u64);
        assert_eq!(&w.sha256, sha);
        assert_eq!(w.path, "/workspace/big");
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().unwrap();
    assert!(reads > 0);
    assert_eq!(
        names(&f.root.join("workspace")),
        BTreeSet::from(["big".to_string()])
    );
    f.assert_host_untouched();
}

// 11: list / stat / mkdir / remove round trips; a recursive remove unlinks symlinks to the
// host instead of following them.
#[test]
fn round_trips_and_recursive_remove() {
    need_root!();
    let f = Fixture::new();
    f.fs.mkdir("/workspace/p/q/r", true).unwrap();
    f.fs.mkdir("/workspace/p/q/r", true).unwrap();
    assert!(matches!(
        f.fs.mkdir("/workspace/p/q/r", false),
        Err(CellFsError::AlreadyExists { .. })
    ));
    assert!(matches!(
        f.fs.mkdir("/workspace/x/y", false),
        Err(CellFsError::NotFound { .. })
    ));
    assert!(matches!(
        f.fs.mkdir("/etc/passwd/x", true),
        Err(CellFsError::NotADirectory { .. })
    ));
    f.fs.mkdir("/", true).unwrap();

    let w =
        f.fs.write(
            "/workspace/p/q/r/f.txt",
            &mut &b"hello"[..],
            Some(0o600),
            100,
        )
        .unwrap();
    assert_eq!(w.sha256, sha_hex(b"hello"));
    let st = f.fs.stat("/workspace/p/q/r/f.txt").unwrap();
    assert_eq!(
        (st.kind, st.size, st.mode, st.path.as_str()),
        (FileKind::File, 5, 0o600, "/workspace/p/q/r/f.txt")
    );
    assert!(st.modified_unix > 1_600_000_000);
    assert!(matches!(
        f.fs.write("/workspace/p/x", &mut &b""[..], Some(0o4755), 100),
        Err(CellFsError::InvalidMode { .. })
    ));
    assert_eq!(f.fs.stat("/").unwrap().kind, FileKind::Directory);

    for n in ["c", "a", "b"] {
        write(&f.fs, &format!("/workspace/p/{n}"), n.as_bytes()).unwrap();
    }
    f.symlink(&f.host, "/workspace/p/q/hostdir");
    f.symlink(f.host.join("canary.txt"), "/workspace/p/q/r/hostcanary");
    let listed: Vec<(String, FileKind)> =
        f.fs.list("/workspace/p")
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect();
    assert_eq!(
        listed,
        vec![
            ("a".into(), FileKind::File),
            ("b".into(), FileKind::File),
            ("c".into(), FileKind::File),
            ("q".into(), FileKind::Directory)
        ]
    );
    let st = f.fs.stat("/workspace/p/q/hostdir").unwrap();
    assert_eq!(st.kind, FileKind::Symlink);
    assert_eq!(st.link_target.as_deref(), Some(f.host.to_str().unwrap()));
    assert!(matches!(
        f.fs.list("/workspace/p/q/hostdir"),
        Err(CellFsError::IsASymlink { .. })
    ));
    assert!(matches!(
        f.fs.list("/workspace/p/a"),
        Err(CellFsError::NotADirectory { .. })
    ));
    assert!(matches!(
        read(&f.fs, "/workspace/p"),
        Err(CellFsError::IsADirectory { .. })
    ));
    assert!(matches!(
        write(&f.fs, "/workspace/p", b"x"),
        Err(CellFsError::IsADirectory { .. })
    ));
    nix::unistd::mkfifo(
        &f.root.join("workspace/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    assert!(matches!(
        read(&f.fs, "/workspace/fifo"),
        Err(CellFsError::NotARegularFile {
            kind: FileKind::Other,
            ..
        })
    ));
    assert!(matches!(
        f.fs.stat("/workspace/nope"),
        Err(CellFsError::NotFound { .. })
    ));
    assert!(matches!(
        f.fs.remove("/workspace/nope", false),
        Err(CellFsError::NotFound { .. })
    ));
    assert_eq!(
        PortError::from(f.fs.stat("/workspace/nope").unwrap_err()).kind,
        PortErrorKind::NotFound
    );

    assert!(matches!(
        f.fs.remove("/workspace/p", false),
        Err(CellFsError::DirectoryNotEmpty { .. })
    ));
    f.fs.remove("/workspace/p/a", false).unwrap();
    f.fs.remove("/workspace/p/q/hostdir", false).unwrap();
    f.symlink(&f.host, "/workspace/p/q/hostdir");
    f.fs.remove("/workspace/p", true).unwrap();
    assert!(matches!(
        f.fs.stat("/workspace/p"),
        Err(CellFsError::NotFound { .. })
    ));
    assert_eq!(
        names(&f.root.join("workspace")),
        BTreeSet::from(["fifo".to_string()])
    );
    // A symlink to a directory given as the target of a recursive remove goes, not its target.
    f.symlink(&f.host, "/workspace/link");
    f.fs.remove("/workspace/link", true).unwrap();
    f.fs.remove("/workspace/fifo", false).unwrap();
    assert!(f.fs.list("/workspace").unwrap().is_empty());
    f.assert_host_untouched();
}

// 5 and 11 together: a recursive remove while a subdirectory is swapped for a symlink to the
// host directory, over and over, never removes anything on the host.
#[test]
fn recursive_remove_racing_a_symlink_swap_never_follows() {
    need_root!();
    let f = Fixture::new();
    let tree = f.root.join("tree");
    let mut removed = 0;
    for _ in 0..200 {
        fs::create_dir_all(tree.join("sub")).unwrap();
        for i in 0..8 {
            fs::write(tree.join(format!("sub/f{i}")), b"x").unwrap();
        }
        let _ = std::os::unix::fs::symlink(&f.host, tree.join("sublink"));
        for p in [tree.clone(), tree.join("sub"), tree.join("sublink")] {
            chown(&p, UID, GID);
        }
        let dir =
            rustix::fs::open(&tree, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let flags = rustix::fs::RenameFlags::EXCHANGE;
                    if rustix::fs::renameat_with(&dir, "sub", &dir, "sublink", flags).is_err() {
                        break; // the remove got one of them
                    }
                }
            })
        };
        match f.fs.remove("/tree", true) {
            Ok(()) => removed += 1,
            // Entries change kind under the walk (a directory emptied and then found to be a
            // symlink, ...): the remove may fail, but never reaches outside.
            Err(
                CellFsError::DirectoryNotEmpty { .. }
                | CellFsError::NotFound { .. }
                | CellFsError::NotADirectory { .. }
                | CellFsError::IsADirectory { .. },
            ) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        f.assert_host_untouched();
        let _ = fs::remove_dir_all(&tree);
    }
    eprintln!("remove race: {removed} of 200 removes completed");
    assert!(removed > 0);
}
