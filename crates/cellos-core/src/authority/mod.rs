//! Typed authority: the four evidence kinds and the derivation graph.
//!
//! "What was this cell allowed to reach, and how do we know?" has four kinds of answer, each its
//! own type with no conversion between them:
//!
//! | kind | evidence | rule classes | epistemic status | tier cap | confidence cap |
//! | --- | --- | --- | --- | --- | --- |
//! | [`ObservedAuthority`] | the host saw SNI / Host / a connection / gave a DNS answer | raw observation, correlation | direct observation or inferred | 2 | 1.0 |
//! | [`ImposedAuthority`] | the supervisor forced it | supervisor imposition | imposed | 3 | 1.0 |
//! | [`ProvenAuthority`] | a verified cryptographic proof | cryptographic verification | proven | 4 | 1.0 |
//! | [`DeclaredAuthority`] | the guest said so | guest declaration | declared | 1 | 0.5 |
//!
//! Each kind is built only by `try_new(derivation)`, which runs [`validate_derivation`] and then
//! the kind's envelope. The rule-class sets are disjoint, so no derivation is valid for two kinds.
//!
//! # The ceiling lattice and non-inflation
//!
//! A derivation's output lives in the product lattice `tier × status × confidence × binding`:
//! tiers `0 ≤ … ≤ 4`; statuses `Declared < Inferred < DirectObservation < Imposed < Proven`;
//! confidence in `[0, 1]`; binding `unbound/not-applicable < bound`. Every input type and every
//! rule class has a [`Ceiling`] in that lattice:
//!
//! | source | tier | status | confidence | may bind |
//! | --- | --- | --- | --- | --- |
//! | guest-declaration input / rule class | 1 | Declared | input's / 0.5 | no |
//! | correlation rule class | 2 | Inferred | 0.9 | no |
//! | SNI, Host, `:authority`, peer, DNS-answer input; raw-observation rule class | 2 | DirectObservation | input's / 1.0 | no |
//! | supervisor-policy input; supervisor-imposition rule class | 3 | Imposed | input's / 1.0 | yes |
//! | certificate, CT, DNSSEC, signed-token input; cryptographic-verification rule class | 4 | Proven | input's / 1.0 | yes |
//!
//! The derivation's ceiling is the meet (component-wise minimum) of all of them; the output must
//! lie at or below it. Hence: confidence never exceeds the least confident input nor the weakest
//! rule class's bound; the tier never exceeds what the weakest rule class (or input) permits; a
//! declared input anywhere caps the output at `Declared`, tier 1; only imposition or proof can
//! claim a name is bound to a flow. Because a meet can only go down, adding inputs or rules to a
//! derivation never raises what it may conclude, and lowering a valid output keeps it valid.
//!
//! Guest declarations are also checked for scope: [`validate_declared_authority_surface`] admits
//! a declaration only if it is a subset of what the spec authorised.

pub mod declared_surface;
pub mod derivation;
pub mod kinds;
pub mod validator;

pub use declared_surface::{
    validate_declared_authority_surface, AuthorisedSurface, DeclaredEgress, DeclaredSurface, Excess,
};
pub use derivation::{
    AppliedRule, AuthorityDerivation, AuthorityInput, AuthorityInputType, AuthorityOutput,
    BindingStatus, Ceiling, EpistemicStatus, Rule, RuleClass, MAX_TIER,
};
pub use kinds::{
    validate_for_kind, AuthorityKind, DeclaredAuthority, Envelope, ImposedAuthority,
    ObservedAuthority, ProvenAuthority,
};
pub use validator::{validate_derivation, ValidationError};
