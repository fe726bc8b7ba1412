//! Byte sizes: plain numbers, decimal and binary units, and clear rejections.

use cellos_core::spec::{parse_byte_size, ByteSizeError};
use proptest::prelude::*;

#[test]
fn plain_numbers_are_bytes() {
    assert_eq!(parse_byte_size("0"), Ok(0));
    assert_eq!(parse_byte_size("4096"), Ok(4096));
    assert_eq!(parse_byte_size(" 12 "), Ok(12));
}

#[test]
fn decimal_units_are_powers_of_1000() {
    assert_eq!(parse_byte_size("512k"), Ok(512_000));
    assert_eq!(parse_byte_size("512K"), Ok(512_000));
    assert_eq!(parse_byte_size("3M"), Ok(3_000_000));
    assert_eq!(parse_byte_size("1G"), Ok(1_000_000_000));
    assert_eq!(parse_byte_size("2T"), Ok(2_000_000_000_000));
    assert_eq!(parse_byte_size("5 M"), Ok(5_000_000));
}

#[test]
fn binary_units_are_powers_of_1024() {
    assert_eq!(parse_byte_size("1Ki"), Ok(1024));
    assert_eq!(parse_byte_size("64Mi"), Ok(64 * 1024 * 1024));
    assert_eq!(parse_byte_size("2Gi"), Ok(2 * 1024 * 1024 * 1024));
    assert_eq!(parse_byte_size("1Ti"), Ok(1 << 40));
}

#[test]
fn garbage_is_rejected_with_a_reason() {
    assert_eq!(parse_byte_size(""), Err(ByteSizeError::Empty));
    assert_eq!(parse_byte_size("   "), Err(ByteSizeError::Empty));
    for malformed in ["Mi", "-1", "1.5Gi", "+3", "1 2", "12Mi!", "0x10"] {
        assert!(
            matches!(parse_byte_size(malformed), Err(ByteSizeError::Malformed(_))),
            "{malformed:?} -> {:?}",
            parse_byte_size(malformed)
        );
    }
    for unknown in ["1MB", "1mi", "3m", "2KiB", "7g", "1b"] {
        assert!(
            matches!(parse_byte_size(unknown), Err(ByteSizeError::UnknownUnit(_))),
            "{unknown:?} -> {:?}",
            parse_byte_size(unknown)
        );
    }
    let message = parse_byte_size("64MB").unwrap_err().to_string();
    assert!(message.contains("Ki, Mi, Gi, Ti"), "{message}");
}

#[test]
fn overflow_is_rejected_not_wrapped() {
    assert_eq!(parse_byte_size("18446744073709551615"), Ok(u64::MAX));
    assert!(matches!(
        parse_byte_size("18446744073709551616"),
        Err(ByteSizeError::Overflow(_))
    ));
    assert!(matches!(
        parse_byte_size("16777216Ti"),
        Err(ByteSizeError::Overflow(_))
    ));
    assert_eq!(parse_byte_size("16777215Ti"), Ok(16_777_215 << 40));
}

proptest! {
    #[test]
    fn every_unit_multiplies_exactly_or_reports_overflow(n in any::<u64>(), unit in 0usize..9) {
        let (suffix, factor) = [
            ("", 1u64), ("k", 1_000), ("M", 1_000_000), ("G", 1_000_000_000),
            ("T", 1_000_000_000_000), ("Ki", 1 << 10), ("Mi", 1 << 20), ("Gi", 1 << 30), ("Ti", 1 << 40),
        ][unit];
        let parsed = parse_byte_size(&format!("{n}{suffix}"));
        match n.checked_mul(factor) {
            Some(bytes) => prop_assert_eq!(parsed, Ok(bytes)),
            None => prop_assert!(matches!(parsed, Err(ByteSizeError::Overflow(_)))),
        }
    }
}
