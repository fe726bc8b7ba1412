//! CIDR parsing and containment.

use cellos_core::spec::{Cidr, CidrError};

fn cidr(text: &str) -> Cidr {
    Cidr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn ipv4_and_ipv6_networks_parse() {
    assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
    assert_eq!(cidr("0.0.0.0/0").prefix_len(), 0);
    assert_eq!(cidr("2001:db8::/32").to_string(), "2001:db8::/32");
    assert_eq!(cidr("192.0.2.7").prefix_len(), 32);
    assert_eq!(cidr("::1").prefix_len(), 128);
}

#[test]
fn bad_prefixes_addresses_and_host_bits_are_rejected() {
    assert!(matches!(
        Cidr::parse("10.0.0.0/33"),
        Err(CidrError::PrefixOutOfRange { .. })
    ));
    assert!(matches!(
        Cidr::parse("::/129"),
        Err(CidrError::PrefixOutOfRange { .. })
    ));
    assert!(matches!(
        Cidr::parse("10.0.0.0/"),
        Err(CidrError::PrefixOutOfRange { .. })
    ));
    assert!(matches!(
        Cidr::parse("10.0.0.0/+8"),
        Err(CidrError::PrefixOutOfRange { .. })
    ));
    assert!(matches!(
        Cidr::parse("10.0.0/8"),
        Err(CidrError::BadAddress(_))
    ));
    assert!(matches!(
        Cidr::parse("example.com/8"),
        Err(CidrError::BadAddress(_))
    ));
    assert!(matches!(Cidr::parse("/8"), Err(CidrError::Malformed(_))));
    let err = Cidr::parse("10.1.0.0/8").unwrap_err();
    assert_eq!(
        err.to_string(),
        "\"10.1.0.0/8\" has host bits set; the network is 10.0.0.0/8"
    );
}

#[test]
fn containment_follows_prefixes_within_one_family() {
    assert!(cidr("10.0.0.0/8").contains(&cidr("10.1.0.0/16")));
    assert!(cidr("10.0.0.0/8").contains(&cidr("10.0.0.0/8")));
    assert!(!cidr("10.1.0.0/16").contains(&cidr("10.0.0.0/8")));
    assert!(!cidr("10.0.0.0/8").contains(&cidr("11.0.0.0/16")));
    assert!(cidr("0.0.0.0/0").contains(&cidr("192.0.2.1")));
    assert!(!cidr("0.0.0.0/0").contains(&cidr("::1")));
    assert!(cidr("2001:db8::/32").contains(&cidr("2001:db8:1::/48")));
}
