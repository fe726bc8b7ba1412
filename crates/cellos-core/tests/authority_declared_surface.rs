//! Declared-authority admission: guest declarations must be a subset of the spec's authority.

use cellos_core::authority::{
    validate_declared_authority_surface, AuthorisedSurface, DeclaredEgress, DeclaredSurface, Excess,
};
use cellos_core::spec::{EgressProtocol, ExecutionCellSpec};

fn spec() -> ExecutionCellSpec {
    serde_json::from_value(serde_json::json!({
        "id": "t-run",
        "run": { "argv": ["true"] },
        "authority": {
            "secretRefs": ["API_TOKEN"],
            "egressRules": [
                { "host": "*.example.com", "port": 443 },
                { "host": "api.other.org", "port": 443 },
                { "cidr": "10.1.0.0/16", "port": 5432 },
                { "cidr": "2001:db8::/32", "port": 53, "protocol": "udp" }
            ],
            "dnsAuthority": { "hostnameAllowlist": ["pkg.mirror.net"] }
        },
        "filesystem": {
            "workspace": { "target": "/work" },
            "mounts": [
                { "source": "/srv/cache", "target": "/cache", "readOnly": false },
                { "source": "/srv/data", "target": "/data" }
            ]
        }
    }))
    .unwrap()
}

fn egress(destination: &str, port: u32, protocol: EgressProtocol) -> DeclaredEgress {
    DeclaredEgress {
        destination: destination.into(),
        port,
        protocol,
    }
}

#[test]
fn a_declaration_inside_the_spec_is_admitted() {
    let declared = DeclaredSurface {
        egress: vec![
            egress("a.example.com", 443, EgressProtocol::Tcp),
            egress("deep.a.example.com", 443, EgressProtocol::Tcp),
            egress("API.other.org.", 443, EgressProtocol::Tcp),
            egress("10.1.200.3", 5432, EgressProtocol::Tcp),
            egress("2001:db8::53", 53, EgressProtocol::Udp),
        ],
        dns_names: vec!["pkg.mirror.net".into(), "x.example.com".into()],
        secret_names: vec!["API_TOKEN".into()],
        write_paths: vec!["/work/out/result.json".into(), "/cache".into()],
    };
    let authorised = AuthorisedSurface::from_spec(&spec());
    assert_eq!(
        validate_declared_authority_surface(&declared, &authorised),
        Ok(())
    );
}

#[test]
fn wildcard_rules_do_not_cover_the_apex() {
    let declared = DeclaredSurface {
        egress: vec![egress("example.com", 443, EgressProtocol::Tcp)],
        dns_names: vec!["example.com".into()],
        ..DeclaredSurface::default()
    };
    let errors =
        validate_declared_authority_surface(&declared, &AuthorisedSurface::from_spec(&spec()))
            .unwrap_err();
    assert_eq!(
        errors,
        vec![
            Excess::Egress {
                destination: "example.com".into(),
                port: 443,
                protocol: EgressProtocol::Tcp
            },
            Excess::DnsName("example.com".into()),
        ]
    );
}

#[test]
fn every_excess_element_is_reported() {
    let declared = DeclaredSurface {
        egress: vec![
            egress("a.example.com", 80, EgressProtocol::Tcp),
            egress("a.example.com", 443, EgressProtocol::Udp),
            egress("10.2.0.1", 5432, EgressProtocol::Tcp),
            egress("2001:db9::1", 53, EgressProtocol::Udp),
            egress("evil.net", 443, EgressProtocol::Tcp),
        ],
        dns_names: vec!["evil.net".into()],
        secret_names: vec!["API_TOKEN".into(), "ROOT_PASSWORD".into()],
        write_paths: vec![
            "/data/x".into(),
            "/workspace".into(),
            "/work/../etc/passwd".into(),
            "relative".into(),
        ],
    };
    let errors =
        validate_declared_authority_surface(&declared, &AuthorisedSurface::from_spec(&spec()))
            .unwrap_err();
    assert_eq!(errors.len(), 11, "{errors:?}");
    assert!(errors.contains(&Excess::Secret("ROOT_PASSWORD".into())));
    assert!(errors.contains(&Excess::DnsName("evil.net".into())));
    assert!(errors.contains(&Excess::WritePath("/data/x".into())));
    assert!(errors.contains(&Excess::WritePath("/work/../etc/passwd".into())));
    assert!(!errors.contains(&Excess::Secret("API_TOKEN".into())));
}

#[test]
fn a_name_never_matches_a_cidr_rule_and_an_ip_never_matches_a_name_rule() {
    let declared = DeclaredSurface {
        egress: vec![
            // 10.1.0.0/16 is authorised for 5432, but a name's addresses are unknown here.
            egress("db.internal", 5432, EgressProtocol::Tcp),
            // *.example.com is authorised for 443, but an address is not a name.
            egress("93.184.216.34", 443, EgressProtocol::Tcp),
        ],
        ..DeclaredSurface::default()
    };
    let errors =
        validate_declared_authority_surface(&declared, &AuthorisedSurface::from_spec(&spec()))
            .unwrap_err();
    assert_eq!(errors.len(), 2);
}

#[test]
fn an_empty_declaration_is_always_admitted_and_an_empty_spec_admits_nothing_else() {
    let empty_spec: ExecutionCellSpec =
        serde_json::from_value(serde_json::json!({"id": "t", "run": {"argv": ["true"]}})).unwrap();
    let authorised = AuthorisedSurface::from_spec(&empty_spec);
    assert_eq!(
        validate_declared_authority_surface(&DeclaredSurface::default(), &authorised),
        Ok(())
    );
    let declared = DeclaredSurface {
        secret_names: vec!["ANY".into()],
        ..DeclaredSurface::default()
    };
    assert_eq!(
        validate_declared_authority_surface(&declared, &authorised),
        Err(vec![Excess::Secret("ANY".into())])
    );
}
