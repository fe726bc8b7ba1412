//! Profiles: the operator's declaration of what an agent may ask for. A profile is a spec
//! template (a session cell's spec without `id`) plus policy packs, loaded and checked once at
//! start so a bad file is refused before any agent connects.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cellos_core::spec::{
    parse_execution_cell, parse_policy_pack, validate_execution_cell, validate_policy_pack,
    ExecutionCellSpec, PolicyPackDocument, Problem, API_VERSION, KIND_EXECUTION_CELL,
};
use serde::Deserialize;

/// The profiles served when the operator gives no file.
pub const DEFAULT_PROFILES: &str = include_str!("default-profiles.yaml");

/// Longest exec of a profile that does not say (and has no TTL to bound it).
const DEFAULT_MAX_EXEC_TIMEOUT_MS: u64 = 300_000;

/// Id the template is validated under (each cell gets its own).
const TEMPLATE_ID: &str = "profile-template";

/// Why a profiles file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read the profiles file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("profiles file {origin}: {source}")]
    Syntax {
        origin: String,
        source: serde_yaml::Error,
    },
    #[error("profiles file {origin}: profiles: declare at least one profile")]
    Empty { origin: String },
    #[error("profile {name:?}: spec: {source}")]
    Spec {
        name: String,
        source: cellos_core::spec::ParseError,
    },
    #[error("profile {name:?}: {}", problems_text(.problems))]
    Invalid {
        name: String,
        problems: Vec<Problem>,
    },
    #[error("profile {name:?}: policy pack {path}: {message}")]
    Policy {
        name: String,
        path: PathBuf,
        message: String,
    },
    #[error(
        "profile {name:?}: spec.run: a profile is a session cell (no run); `run` and \
         `sandbox_exec` give the command"
    )]
    HasRun { name: String },
}

fn problems_text(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilesFile {
    profiles: BTreeMap<String, ProfileEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfileEntry {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    max_exec_timeout_ms: Option<u64>,
    spec: serde_yaml::Value,
    #[serde(default)]
    policies: Vec<PathBuf>,
}

/// One profile, checked.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// The spec every cell of the profile starts from (its `id` is replaced per cell).
    pub template: ExecutionCellSpec,
    pub policies: Vec<PolicyPackDocument>,
    /// Longest exec timeout a call may ask for, and the timeout of a call that gives none.
    pub max_exec_timeout_ms: u64,
}

/// Every profile, by name.
#[derive(Debug, Clone)]
pub struct Profiles {
    profiles: BTreeMap<String, Profile>,
}

impl Profiles {
    /// The built-in profiles ([`DEFAULT_PROFILES`]).
    pub fn builtin() -> Result<Self, ProfileError> {
        Self::parse(DEFAULT_PROFILES, "(built in)", Path::new("."))
    }

    /// Load a profiles file; policy pack paths are relative to its directory.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, &path.display().to_string(), base)
    }

    fn parse(text: &str, origin: &str, base: &Path) -> Result<Self, ProfileError> {
        let file: ProfilesFile =
            serde_yaml::from_str(text).map_err(|source| ProfileError::Syntax {
                origin: origin.to_owned(),
                source,
            })?;
        if file.profiles.is_empty() {
            return Err(ProfileError::Empty {
                origin: origin.to_owned(),
            });
        }
        let profiles = file
            .profiles
            .into_iter()
            .map(|(name, entry)| Ok((name.clone(), profile(name, entry, base)?)))
            .collect::<Result<_, ProfileError>>()?;
        Ok(Self { profiles })
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.profiles.keys().map(String::as_str).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }
}

fn profile(name: String, entry: ProfileEntry, base: &Path) -> Result<Profile, ProfileError> {
    let template = template(&name, entry.spec)?;
    let policies = entry
        .policies
        .iter()
        .map(|path| policy(&name, &base.join(path)))
        .collect::<Result<_, _>>()?;
    let ttl_ms = template
        .lifetime
        .as_ref()
        .and_then(|l| l.ttl_seconds)
        .map(|s| s.saturating_mul(1000));
    let max_exec_timeout_ms = entry
        .max_exec_timeout_ms
        .or(ttl_ms)
        .unwrap_or(DEFAULT_MAX_EXEC_TIMEOUT_MS);
    Ok(Profile {
        description: entry.description.unwrap_or_else(|| name.clone()),
        name,
        template,
        policies,
        max_exec_timeout_ms,
    })
}

/// The template, parsed and validated as a whole document by the same code as any spec.
fn template(name: &str, mut spec: serde_yaml::Value) -> Result<ExecutionCellSpec, ProfileError> {
    if let serde_yaml::Value::Mapping(map) = &mut spec {
        map.insert("id".into(), TEMPLATE_ID.into());
    }
    let mut document = serde_yaml::Mapping::new();
    document.insert("apiVersion".into(), API_VERSION.into());
    document.insert("kind".into(), KIND_EXECUTION_CELL.into());
    document.insert("spec".into(), spec);
    let text = serde_yaml::to_string(&document).map_err(|source| ProfileError::Syntax {
        origin: format!("profile {name:?}"),
        source,
    })?;
    let document = parse_execution_cell(&text).map_err(|source| ProfileError::Spec {
        name: name.to_owned(),
        source,
    })?;
    validate_execution_cell(&document).map_err(|problems| ProfileError::Invalid {
        name: name.to_owned(),
        problems,
    })?;
    if document.spec.run.is_some() {
        return Err(ProfileError::HasRun {
            name: name.to_owned(),
        });
    }
    Ok(document.spec)
}

fn policy(name: &str, path: &Path) -> Result<PolicyPackDocument, ProfileError> {
    let failure = |message: String| ProfileError::Policy {
        name: name.to_owned(),
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failure(e.to_string()))?;
    let pack = parse_policy_pack(&text).map_err(|e| failure(e.to_string()))?;
    validate_policy_pack(&pack).map_err(|problems| failure(problems_text(&problems)))?;
    Ok(pack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_python_profile_is_the_documented_one() {
        let profiles = Profiles::builtin().expect("built-in profiles load");
        let python = profiles.get("python").expect("python profile");
        let limits = python.template.cell_limits();
        assert_eq!(limits.memory_max_bytes, Some(512 << 20));
        assert_eq!(
            python
                .template
                .lifetime
                .as_ref()
                .and_then(|l| l.ttl_seconds),
            Some(300)
        );
        assert!(python.template.authority.egress_rules.is_empty());
        assert_eq!(python.max_exec_timeout_ms, 300_000);
    }

    #[test]
    fn the_example_profiles_file_is_the_builtin_one() {
        let example = include_str!("../../../examples/mcp/profiles.yaml");
        assert_eq!(example, DEFAULT_PROFILES);
    }

    #[test]
    fn a_template_with_run_is_refused() {
        let text = "profiles:\n  p:\n    spec:\n      run: {argv: [/bin/true]}\n";
        let err = Profiles::parse(text, "t", Path::new(".")).expect_err("refused");
        assert!(matches!(err, ProfileError::HasRun { .. }), "{err}");
    }

    #[test]
    fn a_misspelt_spec_field_is_named() {
        let text = "profiles:\n  p:\n    spec:\n      lifetim: {}\n";
        let err = Profiles::parse(text, "t", Path::new(".")).expect_err("refused");
        assert!(err.to_string().contains("lifetim"), "{err}");
    }
}
