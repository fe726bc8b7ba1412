//! `validate_derivation`: structural checks plus the non-inflation invariant.

use super::derivation::{
    AuthorityDerivation, BindingStatus, Ceiling, EpistemicStatus, Rule, RuleClass, MAX_TIER,
};
use super::kinds::AuthorityKind;

/// One reason a derivation (or a typed authority built from it) was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("derivation has no inputs: add at least one piece of evidence to `inputs`")]
    NoInputs,
    #[error("derivation has no rules: add the rule that produced the output to `rulesApplied`")]
    NoRules,
    #[error("inputs[{index}].value is empty: record the observed/declared value")]
    EmptyInputValue { index: usize },
    #[error("inputs[{index}].confidence is {value}: it must be a finite number in [0, 1]")]
    InputConfidenceOutOfRange { index: usize, value: f64 },
    #[error("output.confidence is {value}: it must be a finite number in [0, 1]")]
    OutputConfidenceOutOfRange { value: f64 },
    #[error("output.tier is {tier}: tiers go from 0 to {MAX_TIER}")]
    TierOutOfRange { tier: u8 },
    #[error(
        "rulesApplied[{index}]: rule {rule:?} is of class {actual:?}, not {stated:?}; state its real class"
    )]
    RuleClassMismatch {
        index: usize,
        rule: Rule,
        stated: RuleClass,
        actual: RuleClass,
    },
    #[error(
        "rulesApplied[{index}]: rule {rule:?} has no input it can read; add one of {consumes:?} to `inputs`"
    )]
    RuleWithoutInput {
        index: usize,
        rule: Rule,
        consumes: &'static [super::AuthorityInputType],
    },
    #[error("output.tier {claimed} exceeds {ceiling}, the most its inputs and rules support")]
    TierInflated { claimed: u8, ceiling: u8 },
    #[error(
        "output.confidence {claimed} exceeds {ceiling}, the most its inputs and rules support"
    )]
    ConfidenceInflated { claimed: f64, ceiling: f64 },
    #[error(
        "output.epistemicStatus {claimed:?} exceeds {ceiling:?}, the most its inputs and rules support"
    )]
    EpistemicStatusInflated {
        claimed: EpistemicStatus,
        ceiling: EpistemicStatus,
    },
    #[error(
        "output.bindingStatus is bound, but only supervisor imposition or cryptographic proof can bind a name to a flow"
    )]
    BindingInflated,
    #[error("{kind:?} authority cannot be derived by {class:?} rules; allowed: {allowed:?}")]
    RuleClassNotAllowed {
        kind: AuthorityKind,
        class: RuleClass,
        allowed: &'static [RuleClass],
    },
    #[error("{kind:?} authority must have epistemic status in {allowed:?}, not {status:?}")]
    StatusNotAllowed {
        kind: AuthorityKind,
        status: EpistemicStatus,
        allowed: &'static [EpistemicStatus],
    },
    #[error("{kind:?} authority is capped at tier {max}, output claims {tier}")]
    TierAboveKindCap {
        kind: AuthorityKind,
        tier: u8,
        max: u8,
    },
    #[error("{kind:?} authority is capped at confidence {max}, output claims {confidence}")]
    ConfidenceAboveKindCap {
        kind: AuthorityKind,
        confidence: f64,
        max: f64,
    },
}

fn is_unit_interval(x: f64) -> bool {
    x.is_finite() && (0.0..=1.0).contains(&x)
}

/// Check a derivation's structure and that its output does not inflate its evidence.
///
/// Returns every problem found, structural ones first, so a caller can fix them all at once.
/// Inflation is only judged once the structure is sound (it is meaningless over NaN inputs).
pub fn validate_derivation(derivation: &AuthorityDerivation) -> Result<(), Vec<ValidationError>> {
    let mut errors = Vec::new();
    if derivation.inputs.is_empty() {
        errors.push(ValidationError::NoInputs);
    }
    if derivation.rules_applied.is_empty() {
        errors.push(ValidationError::NoRules);
    }
    for (index, input) in derivation.inputs.iter().enumerate() {
        if input.value.trim().is_empty() {
            errors.push(ValidationError::EmptyInputValue { index });
        }
        if !is_unit_interval(input.confidence) {
            errors.push(ValidationError::InputConfidenceOutOfRange {
                index,
                value: input.confidence,
            });
        }
    }
    let output = &derivation.output;
    if !is_unit_interval(output.confidence) {
        errors.push(ValidationError::OutputConfidenceOutOfRange {
            value: output.confidence,
        });
    }
    if output.tier > MAX_TIER {
        errors.push(ValidationError::TierOutOfRange { tier: output.tier });
    }
    for (index, applied) in derivation.rules_applied.iter().enumerate() {
        let actual = applied.rule.class();
        if actual != applied.class {
            errors.push(ValidationError::RuleClassMismatch {
                index,
                rule: applied.rule,
                stated: applied.class,
                actual,
            });
        }
        let consumes = applied.rule.consumes();
        if !derivation
            .inputs
            .iter()
            .any(|i| consumes.contains(&i.input_type))
        {
            errors.push(ValidationError::RuleWithoutInput {
                index,
                rule: applied.rule,
                consumes,
            });
        }
    }
    if errors.is_empty() {
        check_non_inflation(derivation, &derivation.ceiling(), &mut errors);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn check_non_inflation(
    derivation: &AuthorityDerivation,
    ceiling: &Ceiling,
    errors: &mut Vec<ValidationError>,
) {
    let output = &derivation.output;
    if output.tier > ceiling.tier {
        errors.push(ValidationError::TierInflated {
            claimed: output.tier,
            ceiling: ceiling.tier,
        });
    }
    if output.confidence > ceiling.confidence {
        errors.push(ValidationError::ConfidenceInflated {
            claimed: output.confidence,
            ceiling: ceiling.confidence,
        });
    }
    if output.epistemic_status > ceiling.status {
        errors.push(ValidationError::EpistemicStatusInflated {
            claimed: output.epistemic_status,
            ceiling: ceiling.status,
        });
    }
    if output.binding_status == BindingStatus::Bound && !ceiling.may_bind {
        errors.push(ValidationError::BindingInflated);
    }
}
