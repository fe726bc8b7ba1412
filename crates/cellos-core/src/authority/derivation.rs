//! The authority derivation graph (inputs → rules applied → output) and the ceiling lattice that
//! bounds what a derivation may conclude.
//!
//! Every input type and every rule class carries a [`Ceiling`]: the strongest output it can
//! support. A derivation's ceiling is the meet (component-wise minimum) of the ceilings of all
//! its inputs and all its rule classes, so adding evidence or rules can only ever lower it.

use serde::{Deserialize, Serialize};

/// Highest authority tier any derivation can reach (cryptographically proven).
pub const MAX_TIER: u8 = 4;

/// What kind of evidence an input is. The type decides the input's ceiling, not its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthorityInputType {
    /// TLS ClientHello server name seen by the host.
    Sni,
    /// HTTP/1.1 `Host` header seen by the host.
    HttpHost,
    /// HTTP/2 `:authority` pseudo-header seen by the host.
    H2Authority,
    /// Destination address and port of a connection, seen by the host.
    ConnectionPeer,
    /// An answer the host's DNS proxy returned to the cell.
    DnsAnswer,
    /// A server certificate chain verified against the host's trust roots.
    TlsCertificate,
    /// A signed certificate timestamp / inclusion proof from a CT log.
    CertificateTransparency,
    /// A DNSSEC-validated answer chain.
    DnssecChain,
    /// A signed token (e.g. a workload identity token) whose signature was verified.
    SignedToken,
    /// A value the supervisor itself enforced (a pinned destination, a rewritten name).
    SupervisorPolicy,
    /// Something the guest said about itself (in-cell telemetry).
    GuestDeclaration,
}

/// How a rule reaches its conclusion. The class, not the individual rule, decides the ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleClass {
    /// Taking a value the guest reported at face value.
    GuestDeclaration,
    /// Joining two observations (a DNS answer with a connection peer, SNI with Host).
    Correlation,
    /// Recording a value the host saw directly on the wire.
    RawObservation,
    /// Recording a value the supervisor forced.
    SupervisorImposition,
    /// Checking a signature or proof chain.
    CryptographicVerification,
}

/// One named rule. Each rule belongs to exactly one [`RuleClass`] and consumes some input types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Rule {
    RawSniObserved,
    RawHttpHostObserved,
    RawH2AuthorityObserved,
    ConnectionPeerObserved,
    DnsAnswerObserved,
    /// A connection's destination was among the answers the DNS proxy gave for the name.
    DnsAnswerMatchesPeer,
    /// The TLS SNI agreed with the HTTP Host / `:authority` on the same connection.
    SniMatchesHost,
    TlsCertificateChainVerified,
    CertificateTransparencyVerified,
    DnssecChainVerified,
    SignedTokenVerified,
    SupervisorDestinationPinned,
    SupervisorSniRewritten,
    GuestDeclared,
}

impl Rule {
    /// The class this rule belongs to. An [`AppliedRule`] must state this class.
    pub fn class(self) -> RuleClass {
        match self {
            Rule::RawSniObserved
            | Rule::RawHttpHostObserved
            | Rule::RawH2AuthorityObserved
            | Rule::ConnectionPeerObserved
            | Rule::DnsAnswerObserved => RuleClass::RawObservation,
            Rule::DnsAnswerMatchesPeer | Rule::SniMatchesHost => RuleClass::Correlation,
            Rule::TlsCertificateChainVerified
            | Rule::CertificateTransparencyVerified
            | Rule::DnssecChainVerified
            | Rule::SignedTokenVerified => RuleClass::CryptographicVerification,
            Rule::SupervisorDestinationPinned | Rule::SupervisorSniRewritten => {
                RuleClass::SupervisorImposition
            }
            Rule::GuestDeclared => RuleClass::GuestDeclaration,
        }
    }

    /// Input types this rule reads. A rule applied without any of them derived nothing.
    pub fn consumes(self) -> &'static [AuthorityInputType] {
        use AuthorityInputType as T;
        match self {
            Rule::RawSniObserved => &[T::Sni],
            Rule::RawHttpHostObserved => &[T::HttpHost],
            Rule::RawH2AuthorityObserved => &[T::H2Authority],
            Rule::ConnectionPeerObserved => &[T::ConnectionPeer],
            Rule::DnsAnswerObserved => &[T::DnsAnswer],
            Rule::DnsAnswerMatchesPeer => &[T::DnsAnswer, T::ConnectionPeer],
            Rule::SniMatchesHost => &[T::Sni, T::HttpHost, T::H2Authority],
            Rule::TlsCertificateChainVerified => &[T::TlsCertificate],
            Rule::CertificateTransparencyVerified => &[T::CertificateTransparency],
            Rule::DnssecChainVerified => &[T::DnssecChain],
            Rule::SignedTokenVerified => &[T::SignedToken],
            Rule::SupervisorDestinationPinned | Rule::SupervisorSniRewritten => {
                &[T::SupervisorPolicy]
            }
            Rule::GuestDeclared => &[T::GuestDeclaration],
        }
    }
}

/// How the output is known, ordered weakest → strongest (`Ord` follows the declaration order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EpistemicStatus {
    /// The guest said so.
    Declared,
    /// Concluded by joining observations.
    Inferred,
    /// The host saw it.
    DirectObservation,
    /// The supervisor made it so.
    Imposed,
    /// A verified cryptographic proof says so.
    Proven,
}

/// Whether the conclusion is bound to a specific flow (name ↔ connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BindingStatus {
    /// The output makes no binding claim.
    NotApplicable,
    /// A binding was looked for and not established.
    Unbound,
    /// The name is bound to the flow by proof or by enforcement.
    Bound,
}

impl BindingStatus {
    /// True for the only status that claims something ([`BindingStatus::Bound`]).
    pub fn claims_binding(self) -> bool {
        matches!(self, BindingStatus::Bound)
    }
}

/// One piece of evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorityInput {
    pub input_type: AuthorityInputType,
    pub value: String,
    /// In `[0, 1]`.
    pub confidence: f64,
    /// The event that recorded this evidence, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_event_id: Option<String>,
}

/// A rule and the class it is claimed to belong to (checked against [`Rule::class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppliedRule {
    pub rule: Rule,
    pub class: RuleClass,
}

/// What the derivation concludes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorityOutput {
    /// `0..=MAX_TIER`.
    pub tier: u8,
    /// In `[0, 1]`.
    pub confidence: f64,
    pub epistemic_status: EpistemicStatus,
    pub binding_status: BindingStatus,
}

/// The derivation graph: evidence, the rules applied to it, and the conclusion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorityDerivation {
    pub inputs: Vec<AuthorityInput>,
    pub rules_applied: Vec<AppliedRule>,
    pub output: AuthorityOutput,
}

/// The strongest output some evidence or rule class can support. A point in the product lattice
/// `tier × status × confidence × may_bind`, ordered component-wise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceiling {
    pub tier: u8,
    pub status: EpistemicStatus,
    pub confidence: f64,
    pub may_bind: bool,
}

impl Ceiling {
    /// The top of the lattice: the identity of [`Ceiling::meet`].
    pub const TOP: Ceiling = Ceiling {
        tier: MAX_TIER,
        status: EpistemicStatus::Proven,
        confidence: 1.0,
        may_bind: true,
    };

    /// Greatest lower bound: component-wise minimum.
    pub fn meet(self, other: Ceiling) -> Ceiling {
        Ceiling {
            tier: self.tier.min(other.tier),
            status: self.status.min(other.status),
            confidence: self.confidence.min(other.confidence),
            may_bind: self.may_bind && other.may_bind,
        }
    }

    /// Ceiling of a rule class (see the table in the module documentation).
    pub fn of_rule_class(class: RuleClass) -> Ceiling {
        let (tier, status, confidence, may_bind) = match class {
            RuleClass::GuestDeclaration => (1, EpistemicStatus::Declared, 0.5, false),
            RuleClass::Correlation => (2, EpistemicStatus::Inferred, 0.9, false),
            RuleClass::RawObservation => (2, EpistemicStatus::DirectObservation, 1.0, false),
            RuleClass::SupervisorImposition => (3, EpistemicStatus::Imposed, 1.0, true),
            RuleClass::CryptographicVerification => (MAX_TIER, EpistemicStatus::Proven, 1.0, true),
        };
        Ceiling {
            tier,
            status,
            confidence,
            may_bind,
        }
    }

    /// Ceiling of an input: its type's bound, with the input's own confidence.
    pub fn of_input(input: &AuthorityInput) -> Ceiling {
        use AuthorityInputType as T;
        let (tier, status, may_bind) = match input.input_type {
            T::GuestDeclaration => (1, EpistemicStatus::Declared, false),
            T::Sni | T::HttpHost | T::H2Authority | T::ConnectionPeer | T::DnsAnswer => {
                (2, EpistemicStatus::DirectObservation, false)
            }
            T::SupervisorPolicy => (3, EpistemicStatus::Imposed, true),
            T::TlsCertificate | T::CertificateTransparency | T::DnssecChain | T::SignedToken => {
                (MAX_TIER, EpistemicStatus::Proven, true)
            }
        };
        Ceiling {
            tier,
            status,
            confidence: input.confidence,
            may_bind,
        }
    }
}

impl AuthorityDerivation {
    /// The meet of every input's and every applied rule class's ceiling.
    ///
    /// Rule classes are taken as stated; [`super::validate_derivation`] separately rejects a
    /// stated class that differs from the rule's real one.
    pub fn ceiling(&self) -> Ceiling {
        let from_inputs = self
            .inputs
            .iter()
            .map(Ceiling::of_input)
            .fold(Ceiling::TOP, Ceiling::meet);
        self.rules_applied
            .iter()
            .map(|r| Ceiling::of_rule_class(r.class).meet(Ceiling::of_rule_class(r.rule.class())))
            .fold(from_inputs, Ceiling::meet)
    }
}
