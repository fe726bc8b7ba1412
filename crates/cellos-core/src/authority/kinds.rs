//! The four evidence kinds as distinct types.
//!
//! Each kind wraps a validated [`AuthorityDerivation`] that also fits the kind's envelope
//! (allowed rule classes, allowed epistemic statuses, tier cap, confidence cap). The envelopes'
//! rule classes are pairwise disjoint, so one derivation can never be valid as two kinds: there
//! is no way to turn guest-declared evidence into observed or proven evidence, by conversion or
//! by re-wrapping. The only way in is `try_new` (or deserialisation, which calls it); the wrapped
//! derivation is read-only.

use serde::{Deserialize, Serialize};

use super::derivation::{
    AppliedRule, AuthorityDerivation, AuthorityInput, AuthorityOutput, EpistemicStatus, RuleClass,
    MAX_TIER,
};
use super::validator::{validate_derivation, ValidationError};

/// Names the four kinds, for errors and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthorityKind {
    Observed,
    Proven,
    Imposed,
    Declared,
}

/// What a kind admits, on top of the general non-inflation rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Envelope {
    pub rule_classes: &'static [RuleClass],
    pub statuses: &'static [EpistemicStatus],
    pub max_tier: u8,
    pub max_confidence: f64,
}

impl AuthorityKind {
    pub const ALL: [AuthorityKind; 4] = [
        AuthorityKind::Observed,
        AuthorityKind::Proven,
        AuthorityKind::Imposed,
        AuthorityKind::Declared,
    ];

    /// The kind's envelope (see the table in the module documentation of `authority`).
    pub fn envelope(self) -> Envelope {
        match self {
            AuthorityKind::Observed => Envelope {
                rule_classes: &[RuleClass::RawObservation, RuleClass::Correlation],
                statuses: &[
                    EpistemicStatus::Inferred,
                    EpistemicStatus::DirectObservation,
                ],
                max_tier: 2,
                max_confidence: 1.0,
            },
            AuthorityKind::Proven => Envelope {
                rule_classes: &[RuleClass::CryptographicVerification],
                statuses: &[EpistemicStatus::Proven],
                max_tier: MAX_TIER,
                max_confidence: 1.0,
            },
            AuthorityKind::Imposed => Envelope {
                rule_classes: &[RuleClass::SupervisorImposition],
                statuses: &[EpistemicStatus::Imposed],
                max_tier: 3,
                max_confidence: 1.0,
            },
            AuthorityKind::Declared => Envelope {
                rule_classes: &[RuleClass::GuestDeclaration],
                statuses: &[EpistemicStatus::Declared],
                max_tier: 1,
                max_confidence: 0.5,
            },
        }
    }
}

/// Validate `derivation` and check it fits `kind`'s envelope. Returns every problem found.
pub fn validate_for_kind(
    kind: AuthorityKind,
    derivation: &AuthorityDerivation,
) -> Result<(), Vec<ValidationError>> {
    let mut errors = validate_derivation(derivation).err().unwrap_or_default();
    let envelope = kind.envelope();
    for applied in &derivation.rules_applied {
        if !envelope.rule_classes.contains(&applied.class) {
            errors.push(ValidationError::RuleClassNotAllowed {
                kind,
                class: applied.class,
                allowed: envelope.rule_classes,
            });
        }
    }
    let output = &derivation.output;
    if !envelope.statuses.contains(&output.epistemic_status) {
        errors.push(ValidationError::StatusNotAllowed {
            kind,
            status: output.epistemic_status,
            allowed: envelope.statuses,
        });
    }
    if output.tier > envelope.max_tier {
        errors.push(ValidationError::TierAboveKindCap {
            kind,
            tier: output.tier,
            max: envelope.max_tier,
        });
    }
    // NaN is already reported by `validate_derivation` as out of range.
    if output.confidence > envelope.max_confidence {
        errors.push(ValidationError::ConfidenceAboveKindCap {
            kind,
            confidence: output.confidence,
            max: envelope.max_confidence,
        });
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

macro_rules! authority_kind {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(try_from = "AuthorityDerivation", into = "AuthorityDerivation")]
        pub struct $name {
            derivation: AuthorityDerivation,
        }

        impl $name {
            pub const KIND: AuthorityKind = $kind;

            /// Validate `derivation` against the non-inflation rules and this kind's envelope.
            /// On failure returns the first problem; [`validate_for_kind`] lists them all.
            pub fn try_new(derivation: AuthorityDerivation) -> Result<Self, ValidationError> {
                match validate_for_kind(Self::KIND, &derivation) {
                    Ok(()) => Ok(Self { derivation }),
                    Err(mut errors) => Err(errors.swap_remove(0)),
                }
            }

            pub fn derivation(&self) -> &AuthorityDerivation {
                &self.derivation
            }

            pub fn inputs(&self) -> &[AuthorityInput] {
                &self.derivation.inputs
            }

            pub fn rules_applied(&self) -> &[AppliedRule] {
                &self.derivation.rules_applied
            }

            pub fn output(&self) -> &AuthorityOutput {
                &self.derivation.output
            }

            /// Give the derivation back (e.g. to record it). Re-wrapping goes through `try_new`.
            pub fn into_derivation(self) -> AuthorityDerivation {
                self.derivation
            }
        }

        impl TryFrom<AuthorityDerivation> for $name {
            type Error = ValidationError;

            fn try_from(derivation: AuthorityDerivation) -> Result<Self, ValidationError> {
                Self::try_new(derivation)
            }
        }

        impl From<$name> for AuthorityDerivation {
            fn from(authority: $name) -> AuthorityDerivation {
                authority.derivation
            }
        }
    };
}

authority_kind!(
    /// The host saw it (SNI, Host, `:authority`, a connection, a DNS answer it gave).
    ObservedAuthority,
    AuthorityKind::Observed
);
authority_kind!(
    /// A verified cryptographic proof (certificate chain, CT, DNSSEC, signed token).
    ProvenAuthority,
    AuthorityKind::Proven
);
authority_kind!(
    /// The supervisor forced it (a pinned destination, a rewritten name).
    ImposedAuthority,
    AuthorityKind::Imposed
);
authority_kind!(
    /// The guest said so. Lowest tier: capped at tier 1 and confidence 0.5.
    DeclaredAuthority,
    AuthorityKind::Declared
);
