//! Property tests of the non-inflation invariant.
//!
//! The bounds are restated here as an independent oracle (the tables of the `authority` module
//! documentation) rather than taken from the library, so the properties check the validator
//! against the documented lattice, not against itself.

use cellos_core::authority::{
    validate_derivation, AppliedRule, AuthorityDerivation, AuthorityInput, AuthorityInputType,
    AuthorityKind, AuthorityOutput, BindingStatus, DeclaredAuthority, EpistemicStatus,
    ImposedAuthority, ObservedAuthority, ProvenAuthority, Rule, RuleClass, MAX_TIER,
};
use proptest::prelude::*;

const INPUT_TYPES: [AuthorityInputType; 11] = [
    AuthorityInputType::Sni,
    AuthorityInputType::HttpHost,
    AuthorityInputType::H2Authority,
    AuthorityInputType::ConnectionPeer,
    AuthorityInputType::DnsAnswer,
    AuthorityInputType::TlsCertificate,
    AuthorityInputType::CertificateTransparency,
    AuthorityInputType::DnssecChain,
    AuthorityInputType::SignedToken,
    AuthorityInputType::SupervisorPolicy,
    AuthorityInputType::GuestDeclaration,
];

const RULES: [Rule; 14] = [
    Rule::RawSniObserved,
    Rule::RawHttpHostObserved,
    Rule::RawH2AuthorityObserved,
    Rule::ConnectionPeerObserved,
    Rule::DnsAnswerObserved,
    Rule::DnsAnswerMatchesPeer,
    Rule::SniMatchesHost,
    Rule::TlsCertificateChainVerified,
    Rule::CertificateTransparencyVerified,
    Rule::DnssecChainVerified,
    Rule::SignedTokenVerified,
    Rule::SupervisorDestinationPinned,
    Rule::SupervisorSniRewritten,
    Rule::GuestDeclared,
];

const CLASSES: [RuleClass; 5] = [
    RuleClass::GuestDeclaration,
    RuleClass::Correlation,
    RuleClass::RawObservation,
    RuleClass::SupervisorImposition,
    RuleClass::CryptographicVerification,
];

const STATUSES: [EpistemicStatus; 5] = [
    EpistemicStatus::Declared,
    EpistemicStatus::Inferred,
    EpistemicStatus::DirectObservation,
    EpistemicStatus::Imposed,
    EpistemicStatus::Proven,
];

const BINDINGS: [BindingStatus; 3] = [
    BindingStatus::NotApplicable,
    BindingStatus::Unbound,
    BindingStatus::Bound,
];

/// Oracle: (max tier, max status, max confidence, may bind) of a rule class.
fn class_bound(class: RuleClass) -> (u8, EpistemicStatus, f64, bool) {
    match class {
        RuleClass::GuestDeclaration => (1, EpistemicStatus::Declared, 0.5, false),
        RuleClass::Correlation => (2, EpistemicStatus::Inferred, 0.9, false),
        RuleClass::RawObservation => (2, EpistemicStatus::DirectObservation, 1.0, false),
        RuleClass::SupervisorImposition => (3, EpistemicStatus::Imposed, 1.0, true),
        RuleClass::CryptographicVerification => (4, EpistemicStatus::Proven, 1.0, true),
    }
}

/// Oracle: (max tier, max status, may bind) of an input type.
fn input_bound(t: AuthorityInputType) -> (u8, EpistemicStatus, bool) {
    use AuthorityInputType as T;
    match t {
        T::GuestDeclaration => (1, EpistemicStatus::Declared, false),
        T::Sni | T::HttpHost | T::H2Authority | T::ConnectionPeer | T::DnsAnswer => {
            (2, EpistemicStatus::DirectObservation, false)
        }
        T::SupervisorPolicy => (3, EpistemicStatus::Imposed, true),
        _ => (4, EpistemicStatus::Proven, true),
    }
}

/// Oracle ceiling of a well-formed derivation.
fn oracle_ceiling(d: &AuthorityDerivation) -> (u8, EpistemicStatus, f64, bool) {
    let mut ceiling = (MAX_TIER, EpistemicStatus::Proven, 1.0_f64, true);
    for i in &d.inputs {
        let (tier, status, bind) = input_bound(i.input_type);
        ceiling = (
            ceiling.0.min(tier),
            ceiling.1.min(status),
            ceiling.2.min(i.confidence),
            ceiling.3 && bind,
        );
    }
    for r in &d.rules_applied {
        let (tier, status, conf, bind) = class_bound(r.class);
        ceiling = (
            ceiling.0.min(tier),
            ceiling.1.min(status),
            ceiling.2.min(conf),
            ceiling.3 && bind,
        );
    }
    ceiling
}

fn well_formed(d: &AuthorityDerivation) -> bool {
    let unit = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
    !d.inputs.is_empty()
        && !d.rules_applied.is_empty()
        && d.inputs
            .iter()
            .all(|i| unit(i.confidence) && !i.value.trim().is_empty())
        && unit(d.output.confidence)
        && d.output.tier <= MAX_TIER
        && d.rules_applied.iter().all(|r| {
            r.class == r.rule.class()
                && d.inputs
                    .iter()
                    .any(|i| r.rule.consumes().contains(&i.input_type))
        })
}

fn confidence() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => 0.0..=1.0_f64,
        1 => Just(1.0),
        1 => prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-0.25), Just(1.5)],
    ]
}

fn input() -> impl Strategy<Value = AuthorityInput> {
    (
        prop::sample::select(INPUT_TYPES.to_vec()),
        prop_oneof![9 => Just("api.example.com".to_string()), 1 => Just(" ".to_string())],
        confidence(),
    )
        .prop_map(|(input_type, value, confidence)| AuthorityInput {
            input_type,
            value,
            confidence,
            source_event_id: None,
        })
}

fn applied_rule() -> impl Strategy<Value = AppliedRule> {
    (
        prop::sample::select(RULES.to_vec()),
        prop::option::weighted(0.1, prop::sample::select(CLASSES.to_vec())),
    )
        .prop_map(|(rule, wrong)| AppliedRule {
            rule,
            class: wrong.unwrap_or(rule.class()),
        })
}

fn output() -> impl Strategy<Value = AuthorityOutput> {
    (
        0..=MAX_TIER + 2,
        confidence(),
        prop::sample::select(STATUSES.to_vec()),
        prop::sample::select(BINDINGS.to_vec()),
    )
        .prop_map(
            |(tier, confidence, epistemic_status, binding_status)| AuthorityOutput {
                tier,
                confidence,
                epistemic_status,
                binding_status,
            },
        )
}

fn derivation() -> impl Strategy<Value = AuthorityDerivation> {
    (
        prop::collection::vec(input(), 0..4),
        prop::collection::vec(applied_rule(), 0..4),
        output(),
    )
        .prop_map(|(inputs, rules_applied, output)| AuthorityDerivation {
            inputs,
            rules_applied,
            output,
        })
}

/// A well-formed derivation whose output is exactly its oracle ceiling (the strongest claim the
/// evidence supports).
fn tight_derivation() -> impl Strategy<Value = AuthorityDerivation> {
    (
        prop::collection::vec(prop::sample::select(RULES.to_vec()), 1..4),
        prop::collection::vec(
            (prop::sample::select(INPUT_TYPES.to_vec()), 0.0..=1.0_f64),
            0..3,
        ),
        prop::collection::vec(0.0..=1.0_f64, 4),
    )
        .prop_map(|(rules, extra_inputs, confs)| {
            let mut inputs: Vec<AuthorityInput> = rules
                .iter()
                .zip(confs)
                .map(|(rule, confidence)| AuthorityInput {
                    input_type: rule.consumes()[0],
                    value: "api.example.com".into(),
                    confidence,
                    source_event_id: None,
                })
                .collect();
            inputs.extend(extra_inputs.into_iter().map(|(input_type, confidence)| {
                AuthorityInput {
                    input_type,
                    value: "api.example.com".into(),
                    confidence,
                    source_event_id: None,
                }
            }));
            let mut d = AuthorityDerivation {
                inputs,
                rules_applied: rules
                    .into_iter()
                    .map(|rule| AppliedRule {
                        rule,
                        class: rule.class(),
                    })
                    .collect(),
                output: AuthorityOutput {
                    tier: 0,
                    confidence: 0.0,
                    epistemic_status: EpistemicStatus::Declared,
                    binding_status: BindingStatus::NotApplicable,
                },
            };
            let (tier, status, conf, bind) = oracle_ceiling(&d);
            d.output = AuthorityOutput {
                tier,
                confidence: conf,
                epistemic_status: status,
                binding_status: if bind {
                    BindingStatus::Bound
                } else {
                    BindingStatus::Unbound
                },
            };
            d
        })
}

/// A tight derivation whose output is then kept, lowered or raised in each dimension
/// independently, so valid and barely-invalid outputs are both common.
fn perturbed_derivation() -> impl Strategy<Value = AuthorityDerivation> {
    let step = || prop_oneof![4 => Just(0i8), 3 => Just(-1i8), 1 => Just(1i8)];
    (
        tight_derivation(),
        step(),
        step(),
        step(),
        step(),
        0.0..=1.0_f64,
    )
        .prop_map(|(mut d, tier, conf, status, bind, amount)| {
            let out = &mut d.output;
            out.tier = match tier {
                -1 => out.tier.saturating_sub(1),
                1 => out.tier + 1,
                _ => out.tier,
            };
            out.confidence = match conf {
                -1 => out.confidence * amount,
                1 => out.confidence + amount.max(f64::EPSILON),
                _ => out.confidence,
            };
            let idx = STATUSES
                .iter()
                .position(|s| *s == out.epistemic_status)
                .unwrap_or(0);
            out.epistemic_status = match status {
                -1 => STATUSES[idx.saturating_sub(1)],
                1 => STATUSES[(idx + 1).min(STATUSES.len() - 1)],
                _ => out.epistemic_status,
            };
            out.binding_status = match bind {
                -1 => BindingStatus::NotApplicable,
                1 => BindingStatus::Bound,
                _ => out.binding_status,
            };
            d
        })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        max_global_rejects: 100_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Soundness: whatever passes validation satisfies every documented invariant.
    #[test]
    fn validated_derivations_satisfy_every_invariant(d in prop_oneof![derivation(), perturbed_derivation()]) {
        prop_assume!(validate_derivation(&d).is_ok());
        let out = &d.output;
        prop_assert!(!d.inputs.is_empty() && !d.rules_applied.is_empty());
        prop_assert!(out.confidence.is_finite() && (0.0..=1.0).contains(&out.confidence));
        prop_assert!(out.tier <= MAX_TIER);
        for i in &d.inputs {
            prop_assert!(out.confidence <= i.confidence);
            let (tier, status, bind) = input_bound(i.input_type);
            prop_assert!(out.tier <= tier && out.epistemic_status <= status);
            prop_assert!(bind || out.binding_status != BindingStatus::Bound);
        }
        for r in &d.rules_applied {
            prop_assert_eq!(r.class, r.rule.class());
            let (tier, status, conf, bind) = class_bound(r.class);
            prop_assert!(out.tier <= tier && out.epistemic_status <= status);
            prop_assert!(out.confidence <= conf);
            prop_assert!(bind || out.binding_status != BindingStatus::Bound);
        }
        let declared_anywhere = d.inputs.iter().any(|i| i.input_type == AuthorityInputType::GuestDeclaration)
            || d.rules_applied.iter().any(|r| r.class == RuleClass::GuestDeclaration);
        if declared_anywhere {
            prop_assert_eq!(out.epistemic_status, EpistemicStatus::Declared);
            prop_assert!(out.tier <= 1);
        }
    }

    /// Completeness against the oracle: validation accepts exactly the well-formed derivations
    /// whose output is at or below the oracle ceiling.
    #[test]
    fn validation_agrees_with_the_oracle(d in prop_oneof![derivation(), perturbed_derivation()]) {
        let expected = well_formed(&d) && {
            let (tier, status, conf, bind) = oracle_ceiling(&d);
            d.output.tier <= tier
                && d.output.epistemic_status <= status
                && d.output.confidence <= conf
                && (bind || d.output.binding_status != BindingStatus::Bound)
        };
        prop_assert_eq!(validate_derivation(&d).is_ok(), expected, "{:?}", d);
    }

    /// The strongest supported claim is accepted, and raising it in any one dimension is not.
    #[test]
    fn any_inflated_output_is_rejected(d in tight_derivation(), which in 0..4usize, bump in 0.000_001..1.0_f64) {
        prop_assert!(validate_derivation(&d).is_ok(), "tight derivation rejected: {:?}", d);
        let mut inflated = d.clone();
        let out = &mut inflated.output;
        match which {
            0 => out.tier += 1,
            1 => out.confidence += bump,
            2 => {
                let stronger = STATUSES.iter().find(|s| **s > out.epistemic_status);
                prop_assume!(stronger.is_some());
                out.epistemic_status = *stronger.unwrap();
            }
            _ => {
                prop_assume!(out.binding_status != BindingStatus::Bound);
                out.binding_status = BindingStatus::Bound;
            }
        }
        prop_assert!(validate_derivation(&inflated).is_err(), "inflated accepted: {:?}", inflated);
    }

    /// Weakening a valid output in any dimension keeps it valid (the check is monotone).
    #[test]
    fn weakened_outputs_stay_valid(d in tight_derivation(), tier_down in 0..=MAX_TIER, conf_scale in 0.0..=1.0_f64, status_idx in 0..5usize) {
        let mut weaker = d.clone();
        weaker.output.tier = d.output.tier.saturating_sub(tier_down);
        weaker.output.confidence = d.output.confidence * conf_scale;
        weaker.output.epistemic_status = STATUSES[status_idx].min(d.output.epistemic_status);
        weaker.output.binding_status = BindingStatus::NotApplicable;
        prop_assert!(validate_derivation(&weaker).is_ok());
    }

    /// Adding evidence or rules never raises what a derivation may conclude.
    #[test]
    fn adding_inputs_or_rules_never_raises_the_ceiling(d in tight_derivation(), extra_input in input(), extra_rule in applied_rule()) {
        let before = d.ceiling();
        let mut more = d.clone();
        more.inputs.push(extra_input);
        more.rules_applied.push(extra_rule);
        let after = more.ceiling();
        prop_assert!(after.tier <= before.tier);
        prop_assert!(after.status <= before.status);
        prop_assert!(after.confidence <= before.confidence);
        prop_assert!(before.may_bind || !after.may_bind);
    }

    /// No derivation is accepted as two different kinds.
    #[test]
    fn at_most_one_kind_accepts_a_derivation(d in prop_oneof![derivation(), tight_derivation(), perturbed_derivation()]) {
        let accepted: Vec<AuthorityKind> = [
            ObservedAuthority::try_new(d.clone()).is_ok().then_some(AuthorityKind::Observed),
            ProvenAuthority::try_new(d.clone()).is_ok().then_some(AuthorityKind::Proven),
            ImposedAuthority::try_new(d.clone()).is_ok().then_some(AuthorityKind::Imposed),
            DeclaredAuthority::try_new(d.clone()).is_ok().then_some(AuthorityKind::Declared),
        ]
        .into_iter()
        .flatten()
        .collect();
        prop_assert!(accepted.len() <= 1, "{:?} all accepted {:?}", accepted, d);
    }

    /// Every kind's output respects its own caps.
    #[test]
    fn accepted_kinds_respect_their_caps(d in prop_oneof![tight_derivation(), perturbed_derivation()]) {
        if let Ok(a) = DeclaredAuthority::try_new(d.clone()) {
            prop_assert!(a.output().tier <= 1 && a.output().confidence <= 0.5);
            prop_assert_eq!(a.output().epistemic_status, EpistemicStatus::Declared);
        }
        if let Ok(a) = ObservedAuthority::try_new(d.clone()) {
            prop_assert!(a.output().tier <= 2);
            prop_assert!(a.output().epistemic_status <= EpistemicStatus::DirectObservation);
        }
        if let Ok(a) = ImposedAuthority::try_new(d.clone()) {
            prop_assert!(a.output().tier <= 3);
            prop_assert_eq!(a.output().epistemic_status, EpistemicStatus::Imposed);
        }
        if let Ok(a) = ProvenAuthority::try_new(d) {
            prop_assert_eq!(a.output().epistemic_status, EpistemicStatus::Proven);
        }
    }
}
