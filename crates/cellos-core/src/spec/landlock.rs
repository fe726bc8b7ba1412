//! Landlock ABI levels: what a spec may require, and which Linux release brings each level.
//!
//! Pure knowledge, no probing: the Linux backend compares a spec's requirement with the
//! running kernel; validation only refuses levels this build cannot apply.

/// The highest Landlock ABI whose rights CellOS applies (ABI 5: ioctl on devices). A spec
/// cannot require more: the extra rights of a newer ABI would not be enforced.
pub const HIGHEST_LANDLOCK_ABI: u32 = 5;

/// The requirement of a spec without `filesystem.landlock`: Landlock must be present.
pub const DEFAULT_MIN_LANDLOCK_ABI: u32 = 1;

/// Each Landlock ABI with the first Linux release that has it.
const ABI_KERNELS: [(u32, &str); 6] = [
    (1, "5.13"),
    (2, "5.19"),
    (3, "6.2"),
    (4, "6.7"),
    (5, "6.10"),
    (6, "6.12"),
];

/// The first Linux release with Landlock ABI `abi`, `None` for a level CellOS does not know.
pub fn landlock_abi_kernel(abi: u32) -> Option<&'static str> {
    ABI_KERNELS
        .iter()
        .find(|(level, _)| *level == abi)
        .map(|(_, kernel)| *kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_abi_up_to_the_highest_applied_has_a_kernel_release() {
        for abi in 1..=HIGHEST_LANDLOCK_ABI {
            assert!(landlock_abi_kernel(abi).is_some(), "ABI {abi}");
        }
        assert_eq!(landlock_abi_kernel(2), Some("5.19"));
        assert_eq!(landlock_abi_kernel(0), None);
    }
}
