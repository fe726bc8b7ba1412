//! The cell's seccomp filter: a deny list over an allow-by-default policy.
//!
//! The workload already runs without capabilities in its own namespaces; the filter removes the
//! kernel surface that is still reachable from there and that has a history of privilege
//! escalations (new namespaces, mounts, BPF, io_uring, keyrings, perf, userfaultfd, ...).
//! Denied calls fail with `EPERM` so programs see an ordinary permission error. `clone3` fails
//! with `ENOSYS` instead: its flags sit behind a pointer the filter cannot read, and on `ENOSYS`
//! libc falls back to `clone`, whose flags the filter does check.
//!
//! The program is compiled with seccompiler. Two of its limits are worked around by hand (see
//! `chain` and `x32_guard`): one seccompiler filter has one match action (we need `EPERM`
//! and `ENOSYS`), and its rules key on exact syscall numbers (x32 is a number range).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use sha2::{Digest, Sha256};

use crate::error::LinuxError;

/// Name recorded in isolation evidence for [`default_profile`].
pub const DEFAULT_PROFILE_NAME: &str = "cellos-default-v1";

/// A compiled seccomp program and its identity for evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompProfile {
    pub name: String,
    /// Hex SHA-256 of the BPF instructions (8 bytes each: code LE16, jt, jf, k LE32).
    pub sha256: String,
    program: BpfProgram,
}

impl SeccompProfile {
    /// Install the filter on the calling thread (sets `no_new_privs` first, as the kernel
    /// requires for unprivileged filters). Meant for the cell's init just before exec; the
    /// success path does not allocate.
    pub fn apply(&self) -> Result<(), LinuxError> {
        seccompiler::apply_filter(&self.program).map_err(|e| LinuxError::Setup {
            what: format!("install seccomp profile {}", self.name),
            detail: e.to_string(),
        })
    }

    pub fn program(&self) -> &BpfProgram {
        &self.program
    }
}

/// The default cell profile, compiled once per process.
pub fn default_profile() -> Result<SeccompProfile, LinuxError> {
    static CACHE: OnceLock<SeccompProfile> = OnceLock::new();
    if let Some(profile) = CACHE.get() {
        return Ok(profile.clone());
    }
    let profile = compile_default()?;
    Ok(CACHE.get_or_init(|| profile).clone())
}

/// Syscalls denied outright with `EPERM`.
fn denied_syscalls() -> Vec<i64> {
    let mut calls = vec![
        // Mount table and root changes.
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_fsopen,
        libc::SYS_fsmount,
        libc::SYS_fsconfig,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        // New or foreign namespaces (clone is filtered by flags below).
        libc::SYS_unshare,
        libc::SYS_setns,
        // Reading or steering other processes.
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_getfd,
        // Kernel code and boot state.
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_quotactl_fd,
        libc::SYS_syslog,
        libc::SYS_lookup_dcookie,
        libc::SYS_vhangup,
        // Large attack surface that cells do not need.
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        // File handles bypass path-based confinement.
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        // Host clock.
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_settimeofday,
        libc::SYS_adjtimex,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_uselib]);
    calls
}

/// `clone` flags that create namespaces.
const NAMESPACE_FLAGS: [i32; 8] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
    0x80, // CLONE_NEWTIME (not exported by libc for every target)
];

/// `personality` values allowed: plain Linux, 32-bit Linux, UNAME26 variants, and the query.
const ALLOWED_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// Every `EPERM` rule of the profile: the plainly denied syscalls (no conditions) and the
/// argument rules of `clone` and `personality`.
fn deny_rules() -> Result<BTreeMap<i64, Vec<SeccompRule>>, LinuxError> {
    let mut eperm: BTreeMap<i64, Vec<SeccompRule>> = denied_syscalls()
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            let flag = u64::from(flag.unsigned_abs());
            let cond = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?;
            SeccompRule::new(vec![cond])
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(build_error)?;
    eperm.insert(libc::SYS_clone, clone_rules);
    let personality_rule = SeccompRule::new(
        ALLOWED_PERSONALITIES
            .iter()
            .map(|&p| SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(build_error)?,
    )
    .map_err(build_error)?;
    eperm.insert(libc::SYS_personality, vec![personality_rule]);
    Ok(eperm)
}

fn build_error(e: seccompiler::BackendError) -> LinuxError {
    LinuxError::Setup {
        what: format!("compile seccomp profile {DEFAULT_PROFILE_NAME}"),
        detail: e.to_string(),
    }
}

fn target_arch() -> Result<TargetArch, LinuxError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        LinuxError::missing(
            format!("seccomp for architecture {}", std::env::consts::ARCH),
            "CellOS seccomp profiles are built for x86_64 and aarch64; run on one of those",
        )
    })
}

/// seccompiler's linear program for `eperm` (each rule's syscall fails with `EPERM`), followed
/// by the `clone3` → `ENOSYS` rule (see [`chain`]).
fn linear(
    arch: TargetArch,
    eperm: BTreeMap<i64, Vec<SeccompRule>>,
) -> Result<BpfProgram, LinuxError> {
    let deny = SeccompFilter::new(
        eperm,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM.unsigned_abs()),
        arch,
    )
    .map_err(build_error)?;
    let no_clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS.unsigned_abs()),
        arch,
    )
    .map_err(build_error)?;
    let deny: BpfProgram = deny.try_into().map_err(build_error)?;
    let no_clone3: BpfProgram = no_clone3.try_into().map_err(build_error)?;
    Ok(chain(deny, no_clone3))
}

/// The x32 guard, then a binary search over the ruled syscalls: a plainly denied one returns
/// `EPERM` at its leaf, and only `clone`, `personality` and `clone3` (and every foreign-arch
/// call) run seccompiler's linear program, built from their rules alone. It decides exactly as
/// the linear program of every rule does (see the tests), in far fewer instructions: the kernel
/// evaluates a new filter for each syscall number when it installs it, so the shorter the
/// paths, the cheaper each cell's install.
fn compile_default() -> Result<SeccompProfile, LinuxError> {
    let arch = target_arch()?;
    let rules = deny_rules()?;
    // Every ruled syscall, sorted, with whether it is plainly denied; `clone3` has its own
    // (ENOSYS) rule in the linear program.
    let mut ruled: Vec<(i64, bool)> = rules
        .iter()
        .map(|(&nr, conditions)| (nr, conditions.is_empty()))
        .collect();
    ruled.push((libc::SYS_clone3, false));
    ruled.sort_unstable();
    let argued = rules.into_iter().filter(|(_, r)| !r.is_empty()).collect();
    let mut program = x32_guard(arch);
    program.extend(dispatch(arch, &ruled, linear(arch, argued)?)?);
    Ok(SeccompProfile {
        name: DEFAULT_PROFILE_NAME.into(),
        sha256: program_sha256(&program),
        program,
    })
}

/// `AUDIT_ARCH_*` of `arch` (linux/audit.h), what `seccomp_data.arch` holds.
fn audit_arch(arch: TargetArch) -> u32 {
    match arch {
        TargetArch::x86_64 => 0xc000_003e,
        TargetArch::aarch64 => 0xc000_00b7,
    }
}

/// Put a binary search over `ruled` (sorted syscall numbers, each with whether it is plainly
/// denied) in front of `full`: a native syscall with no rule is allowed after about log2(n)
/// comparisons, a plainly denied one gets `EPERM` there, and the other ruled ones (and every
/// foreign-arch call) run `full`.
///
/// The kernel evaluates a new filter for every syscall number when it is installed (to cache
/// the ones it always allows), so a linear program made each install cost about 0.2 ms per
/// cell; the search makes that, and every ruled-out syscall at run time, a few comparisons.
/// Hand-written because seccompiler emits one linear chain of comparisons.
fn dispatch(
    arch: TargetArch,
    ruled: &[(i64, bool)],
    full: BpfProgram,
) -> Result<BpfProgram, LinuxError> {
    const SECCOMP_DATA_ARCH_OFFSET: u32 = 4;
    let mut head = vec![
        Op::Ins(sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: SECCOMP_DATA_ARCH_OFFSET,
        }),
        Op::Ins(sock_filter {
            code: BPF_JMP_JEQ_K,
            jt: 1,
            jf: 0,
            k: audit_arch(arch),
        }),
        Op::Full,
        Op::Ins(sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        }),
    ];
    let numbers = ruled
        .iter()
        .map(|&(nr, plain)| Ok((u32::try_from(nr)?, plain)))
        .collect::<Result<Vec<_>, std::num::TryFromIntError>>()
        .map_err(|_| LinuxError::Setup {
            what: format!("compile seccomp profile {DEFAULT_PROFILE_NAME}"),
            detail: "a syscall number does not fit seccomp's 32 bits".into(),
        })?;
    head.extend(search(&numbers)?);
    let len = head.len();
    let mut program: BpfProgram = head
        .into_iter()
        .enumerate()
        .map(|(i, op)| match op {
            Op::Ins(ins) => ins,
            // `ja k` continues at pc + 1 + k; `full` starts right after the search.
            Op::Full => sock_filter {
                code: BPF_JMP_JA,
                jt: 0,
                jf: 0,
                k: u32::try_from(len - i - 1).unwrap_or(u32::MAX),
            },
        })
        .collect();
    program.extend(full);
    Ok(program)
}

/// One instruction of the search, or a jump to the full program (resolved once laid out).
enum Op {
    Ins(sock_filter),
    Full,
}

/// Search the sorted `numbers` (each with whether it is plainly denied) for the syscall
/// number in A: not found → allow; found → `EPERM` if plainly denied, else the full program.
/// Leaves test up to three numbers in turn; inner nodes split on `jge`.
fn search(numbers: &[(u32, bool)]) -> Result<Vec<Op>, LinuxError> {
    let jump = |n: usize| {
        u8::try_from(n).map_err(|_| LinuxError::Setup {
            what: format!("compile seccomp profile {DEFAULT_PROFILE_NAME}"),
            detail: "syscall search tree too deep for BPF's 8-bit jumps".into(),
        })
    };
    if numbers.len() <= 3 {
        // Tests, then `ret ALLOW`, then the targets this leaf needs: `ret EPERM`, `full`.
        let tests = numbers.len();
        let any_plain = numbers.iter().any(|&(_, plain)| plain);
        let eperm_at = tests + 1;
        let full_at = eperm_at + usize::from(any_plain);
        let mut ops = Vec::with_capacity(tests + 3);
        for (i, &(nr, plain)) in numbers.iter().enumerate() {
            // `jt` counts from the next instruction.
            let target = if plain { eperm_at } else { full_at };
            ops.push(Op::Ins(sock_filter {
                code: BPF_JMP_JEQ_K,
                jt: jump(target - i - 1)?,
                jf: 0,
                k: nr,
            }));
        }
        ops.push(Op::Ins(ret(SECCOMP_RET_ALLOW)));
        if any_plain {
            ops.push(Op::Ins(ret(SECCOMP_RET_ERRNO | libc::EPERM.unsigned_abs())));
        }
        if numbers.iter().any(|&(_, plain)| !plain) {
            ops.push(Op::Full);
        }
        return Ok(ops);
    }
    let (low, high) = numbers.split_at(numbers.len() / 2);
    let low = search(low)?;
    let mut ops = vec![Op::Ins(sock_filter {
        code: BPF_JMP_JGE_K,
        jt: jump(low.len())?,
        jf: 0,
        k: high[0].0,
    })];
    ops.extend(low);
    ops.extend(search(high)?);
    Ok(ops)
}

fn ret(k: u32) -> sock_filter {
    sock_filter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k,
    }
}

/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JA: u16 = 0x05;
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// Run `first`; where it would allow, continue with `second` instead. seccompiler gives each
/// filter a single match action, so the `EPERM` list and the `ENOSYS` rule are two programs;
/// chaining them keeps one program (one install, one digest). Every `ret ALLOW` of `first`
/// becomes a forward jump to the start of `second`, which reloads what it needs.
fn chain(first: BpfProgram, second: BpfProgram) -> BpfProgram {
    let len = first.len();
    let mut out: BpfProgram = first
        .into_iter()
        .enumerate()
        .map(|(i, ins)| {
            if ins.code == BPF_RET_K && ins.k == SECCOMP_RET_ALLOW {
                // `ja k` continues at pc + 1 + k; `second` starts at index `len`.
                let offset = u32::try_from(len - i - 1).unwrap_or(u32::MAX);
                sock_filter {
                    code: BPF_JMP_JA,
                    jt: 0,
                    jf: 0,
                    k: offset,
                }
            } else {
                ins
            }
        })
        .collect();
    out.extend(second);
    out
}

/// On x86_64 the x32 ABI shares `AUDIT_ARCH_X86_64` and numbers its syscalls from `0x40000000`,
/// so exact-number rules would miss it. Refuse that whole range with `ENOSYS` before the
/// seccompiler program runs. seccompiler cannot express a number range, hence hand-written.
fn x32_guard(arch: TargetArch) -> BpfProgram {
    if arch != TargetArch::x86_64 {
        return Vec::new();
    }
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    const SECCOMP_DATA_NR_OFFSET: u32 = 0;
    vec![
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: SECCOMP_DATA_NR_OFFSET,
        },
        sock_filter {
            code: BPF_JMP_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::ENOSYS.unsigned_abs(),
        },
    ]
}

/// Digest of the program in the kernel's `struct sock_filter` layout (little-endian fields).
fn program_sha256(program: &[sock_filter]) -> String {
    let mut hasher = Sha256::new();
    for ins in program {
        hasher.update(ins.code.to_le_bytes());
        hasher.update([ins.jt, ins.jf]);
        hasher.update(ins.k.to_le_bytes());
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_is_deterministic_and_named() {
        let a = compile_default().expect("compile");
        let b = default_profile().expect("compile cached");
        assert_eq!(a.sha256, b.sha256);
        assert_eq!(a.sha256.len(), 64);
        assert_eq!(a.name, DEFAULT_PROFILE_NAME);
        assert_eq!(a.sha256, program_sha256(a.program()));
    }

    /// A classic-BPF interpreter for the instructions these programs use, over a
    /// `seccomp_data` (nr, arch, six arguments). Unknown instructions fail the test.
    fn run(program: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend(nr.to_le_bytes());
        data.extend(arch.to_le_bytes());
        data.extend(0u64.to_le_bytes());
        for a in args {
            data.extend(a.to_le_bytes());
        }
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let ins = &program[pc];
            pc += 1;
            let cond = |taken: bool| if taken { ins.jt } else { ins.jf } as usize;
            match ins.code {
                0x20 => {
                    let k = ins.k as usize;
                    a = u32::from_le_bytes(data[k..k + 4].try_into().unwrap());
                }
                0x54 => a &= ins.k,
                0x05 => pc += ins.k as usize,
                0x15 => pc += cond(a == ins.k),
                0x25 => pc += cond(a > ins.k),
                0x35 => pc += cond(a >= ins.k),
                0x45 => pc += cond(a & ins.k != 0),
                0x06 => return ins.k,
                code => panic!("instruction {code:#x} at {}", pc - 1),
            }
        }
    }

    #[test]
    fn the_search_decides_every_syscall_as_the_linear_program_does() {
        let arch = target_arch().expect("arch");
        let mut guarded = x32_guard(arch);
        guarded.extend(linear(arch, deny_rules().expect("rules")).expect("compile"));
        let fast = default_profile().expect("compile").program;
        assert!(
            fast.len() < guarded.len(),
            "{} vs {}",
            fast.len(),
            guarded.len()
        );
        let native = audit_arch(arch);
        let arg_sets = [
            [0u64; 6],
            [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0],
            [libc::SIGCHLD as u64, 0, 0, 0, 0, 0],
            [0x8, 0, 0, 0, 0, 0],
            [0x0040_0000, 0, 0, 0, 0, 0],
            [u64::MAX; 6],
        ];
        let mut allowed = 0;
        for nr in (0..1024).chain([0x4000_0000, 0x4000_0010, u32::MAX]) {
            for arch in [native, 0x4000_0003, 0] {
                for args in arg_sets {
                    let expected = run(&guarded, nr, arch, args);
                    assert_eq!(
                        run(&fast, nr, arch, args),
                        expected,
                        "nr {nr} arch {arch:#x} args {args:?}"
                    );
                    allowed += usize::from(expected == SECCOMP_RET_ALLOW);
                }
            }
        }
        assert!(allowed > 0);
        // What the profile promises, through the search: denied, filtered and allowed calls.
        let eperm = SECCOMP_RET_ERRNO | libc::EPERM as u32;
        for nr in [
            libc::SYS_mount,
            libc::SYS_bpf,
            libc::SYS_ptrace,
            libc::SYS_unshare,
        ] {
            assert_eq!(run(&fast, nr as u32, native, [0; 6]), eperm);
        }
        let clone = libc::SYS_clone as u32;
        assert_eq!(run(&fast, clone, native, arg_sets[1]), eperm);
        assert_eq!(run(&fast, clone, native, arg_sets[2]), SECCOMP_RET_ALLOW);
        assert_eq!(
            run(&fast, libc::SYS_clone3 as u32, native, [0; 6]),
            SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        assert_eq!(
            run(&fast, libc::SYS_read as u32, native, [0; 6]),
            SECCOMP_RET_ALLOW
        );
        assert_ne!(
            run(&fast, libc::SYS_read as u32, 0x4000_0003, [0; 6]),
            SECCOMP_RET_ALLOW
        );
    }

    #[test]
    fn chain_turns_every_allow_of_the_deny_list_into_a_jump_to_the_clone3_rule() {
        let arch = target_arch().expect("arch");
        let compile = |rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32| -> BpfProgram {
            SeccompFilter::new(
                rules,
                SeccompAction::Allow,
                SeccompAction::Errno(errno.unsigned_abs()),
                arch,
            )
            .expect("filter")
            .try_into()
            .expect("compile")
        };
        let deny = compile(deny_rules().expect("rules"), libc::EPERM);
        let no_clone3 = compile(
            [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
            libc::ENOSYS,
        );
        let chained = chain(deny.clone(), no_clone3.clone());
        assert_eq!(&chained[deny.len()..], no_clone3.as_slice());
        let mut jumps = 0;
        for (n, (before, after)) in deny.iter().zip(&chained).enumerate() {
            if before.code == BPF_RET_K && before.k == SECCOMP_RET_ALLOW {
                assert_eq!(after.code, BPF_JMP_JA);
                assert_eq!(n + 1 + after.k as usize, deny.len());
                jumps += 1;
            } else {
                assert_eq!(before, after);
            }
        }
        assert!(jumps > 0);
    }
}
