//! The four authority kinds: construction through `try_new`, envelopes, serde round-trips.

use cellos_core::authority::{
    validate_for_kind, AppliedRule, AuthorityDerivation, AuthorityInput, AuthorityInputType,
    AuthorityKind, AuthorityOutput, BindingStatus, DeclaredAuthority, EpistemicStatus,
    ImposedAuthority, ObservedAuthority, ProvenAuthority, Rule, RuleClass, ValidationError,
};

fn input(input_type: AuthorityInputType, confidence: f64) -> AuthorityInput {
    AuthorityInput {
        input_type,
        value: "api.example.com".into(),
        confidence,
        source_event_id: None,
    }
}

fn rule(rule: Rule) -> AppliedRule {
    AppliedRule {
        rule,
        class: rule.class(),
    }
}

fn output(tier: u8, confidence: f64, status: EpistemicStatus) -> AuthorityOutput {
    AuthorityOutput {
        tier,
        confidence,
        epistemic_status: status,
        binding_status: BindingStatus::NotApplicable,
    }
}

fn observed_sni() -> AuthorityDerivation {
    AuthorityDerivation {
        inputs: vec![input(AuthorityInputType::Sni, 0.95)],
        rules_applied: vec![rule(Rule::RawSniObserved)],
        output: output(2, 0.95, EpistemicStatus::DirectObservation),
    }
}

#[test]
fn observed_sni_example_is_accepted_and_readable() {
    let observed = ObservedAuthority::try_new(observed_sni()).unwrap();
    assert_eq!(observed.output().tier, 2);
    assert_eq!(observed.output().confidence, 0.95);
    assert_eq!(observed.inputs()[0].value, "api.example.com");
    assert_eq!(observed.rules_applied()[0].rule, Rule::RawSniObserved);
}

#[test]
fn correlated_observation_is_observed_with_inferred_status() {
    let derivation = AuthorityDerivation {
        inputs: vec![
            input(AuthorityInputType::DnsAnswer, 1.0),
            input(AuthorityInputType::ConnectionPeer, 1.0),
        ],
        rules_applied: vec![rule(Rule::DnsAnswerMatchesPeer)],
        output: output(2, 0.9, EpistemicStatus::Inferred),
    };
    assert!(ObservedAuthority::try_new(derivation.clone()).is_ok());
    let mut too_sure = derivation;
    too_sure.output.confidence = 0.95;
    assert!(matches!(
        ObservedAuthority::try_new(too_sure),
        Err(ValidationError::ConfidenceInflated { .. })
    ));
}

#[test]
fn proven_requires_cryptographic_rules_and_may_bind() {
    let derivation = AuthorityDerivation {
        inputs: vec![input(AuthorityInputType::TlsCertificate, 1.0)],
        rules_applied: vec![rule(Rule::TlsCertificateChainVerified)],
        output: AuthorityOutput {
            binding_status: BindingStatus::Bound,
            ..output(4, 1.0, EpistemicStatus::Proven)
        },
    };
    let proven = ProvenAuthority::try_new(derivation).unwrap();
    assert_eq!(proven.output().binding_status, BindingStatus::Bound);
}

#[test]
fn imposed_requires_supervisor_rules_and_is_capped_at_tier_3() {
    let mut derivation = AuthorityDerivation {
        inputs: vec![input(AuthorityInputType::SupervisorPolicy, 1.0)],
        rules_applied: vec![rule(Rule::SupervisorDestinationPinned)],
        output: output(3, 1.0, EpistemicStatus::Imposed),
    };
    assert!(ImposedAuthority::try_new(derivation.clone()).is_ok());
    derivation.output.tier = 4;
    assert!(ImposedAuthority::try_new(derivation).is_err());
}

#[test]
fn declared_is_capped_at_tier_1_and_confidence_half() {
    let base = AuthorityDerivation {
        inputs: vec![input(AuthorityInputType::GuestDeclaration, 1.0)],
        rules_applied: vec![rule(Rule::GuestDeclared)],
        output: output(1, 0.5, EpistemicStatus::Declared),
    };
    assert!(DeclaredAuthority::try_new(base.clone()).is_ok());

    let mut tier2 = base.clone();
    tier2.output.tier = 2;
    assert_eq!(
        DeclaredAuthority::try_new(tier2),
        Err(ValidationError::TierInflated {
            claimed: 2,
            ceiling: 1
        })
    );

    let mut sure = base.clone();
    sure.output.confidence = 0.6;
    assert!(DeclaredAuthority::try_new(sure).is_err());

    let mut observed = base;
    observed.output.epistemic_status = EpistemicStatus::DirectObservation;
    assert!(DeclaredAuthority::try_new(observed).is_err());
}

#[test]
fn a_guest_declaration_cannot_be_dressed_up_as_observed_or_proven() {
    // A declared input fed through an observation rule: the declared input caps the status.
    let laundered = AuthorityDerivation {
        inputs: vec![
            input(AuthorityInputType::GuestDeclaration, 1.0),
            input(AuthorityInputType::Sni, 1.0),
        ],
        rules_applied: vec![rule(Rule::RawSniObserved)],
        output: output(2, 1.0, EpistemicStatus::DirectObservation),
    };
    let errors = validate_for_kind(AuthorityKind::Observed, &laundered).unwrap_err();
    assert!(errors.contains(&ValidationError::EpistemicStatusInflated {
        claimed: EpistemicStatus::DirectObservation,
        ceiling: EpistemicStatus::Declared,
    }));
    // Stating a false class for the guest rule is caught as a class mismatch.
    let relabelled = AuthorityDerivation {
        inputs: vec![input(AuthorityInputType::GuestDeclaration, 1.0)],
        rules_applied: vec![AppliedRule {
            rule: Rule::GuestDeclared,
            class: RuleClass::CryptographicVerification,
        }],
        output: output(4, 1.0, EpistemicStatus::Proven),
    };
    assert!(ProvenAuthority::try_new(relabelled.clone()).is_err());
    let errors = validate_for_kind(AuthorityKind::Proven, &relabelled).unwrap_err();
    assert!(errors
        .iter()
        .any(|e| matches!(e, ValidationError::RuleClassMismatch { .. })));
}

#[test]
fn a_valid_observed_derivation_is_rejected_by_every_other_kind() {
    let derivation = observed_sni();
    assert!(ObservedAuthority::try_new(derivation.clone()).is_ok());
    assert!(ProvenAuthority::try_new(derivation.clone()).is_err());
    assert!(ImposedAuthority::try_new(derivation.clone()).is_err());
    assert!(DeclaredAuthority::try_new(derivation).is_err());
}

#[test]
fn structural_errors_are_all_reported() {
    let derivation = AuthorityDerivation {
        inputs: vec![],
        rules_applied: vec![],
        output: output(9, f64::NAN, EpistemicStatus::Declared),
    };
    let errors = validate_for_kind(AuthorityKind::Declared, &derivation).unwrap_err();
    assert!(errors.contains(&ValidationError::NoInputs));
    assert!(errors.contains(&ValidationError::NoRules));
    assert!(errors.contains(&ValidationError::TierOutOfRange { tier: 9 }));
    assert!(errors
        .iter()
        .any(|e| matches!(e, ValidationError::OutputConfidenceOutOfRange { .. })));
    assert_eq!(
        DeclaredAuthority::try_new(derivation),
        Err(ValidationError::NoInputs)
    );
}

#[test]
fn a_rule_with_none_of_its_inputs_is_rejected() {
    let derivation = AuthorityDerivation {
        inputs: vec![input(AuthorityInputType::HttpHost, 1.0)],
        rules_applied: vec![rule(Rule::RawSniObserved)],
        output: output(2, 1.0, EpistemicStatus::DirectObservation),
    };
    assert!(matches!(
        ObservedAuthority::try_new(derivation),
        Err(ValidationError::RuleWithoutInput {
            rule: Rule::RawSniObserved,
            ..
        })
    ));
}

#[test]
fn serde_round_trip_keeps_the_value_and_deserialising_runs_the_validator() {
    let observed = ObservedAuthority::try_new(observed_sni()).unwrap();
    let json = serde_json::to_string(&observed).unwrap();
    assert!(json.contains("\"inputType\":\"sni\""));
    let back: ObservedAuthority = serde_json::from_str(&json).unwrap();
    assert_eq!(back, observed);
    // The same bytes are not a valid DeclaredAuthority, and an inflated one does not parse.
    assert!(serde_json::from_str::<DeclaredAuthority>(&json).is_err());
    let inflated = json.replace("\"tier\":2", "\"tier\":3");
    assert!(serde_json::from_str::<ObservedAuthority>(&inflated).is_err());
}
