//! Semantic rules of an `ExecutionCell` spec (the parts serde cannot express).

use std::collections::{BTreeMap, BTreeSet};

use super::common::{
    check_absolute_path, check_dns_label, check_file_name, check_string_map, check_target,
    check_text,
};
use crate::spec::cidr::Cidr;
use crate::spec::document::{
    AuthorityBundle, ExecutionCellSpec, ExportCredentials, ExportSpec, ExportTargetKind,
    FilesystemSpec, LandlockSpec, Lifetime, RootfsSpec, RunLimits, RunSpec, SecretDeliveryMode,
};
use crate::spec::hostname::check_hostname_pattern;
use crate::spec::landlock::HIGHEST_LANDLOCK_ABI;
use crate::spec::paths::normalize_path;
use crate::spec::problem::Problems;

/// Longest cell lifetime: a cell is disposable, not a server.
pub const MAX_TTL_SECONDS: u64 = 7 * 24 * 60 * 60;
/// Smallest memory limit: below this not even a shell starts, so it is surely a unit mistake.
pub const MIN_MEMORY_BYTES: u64 = 1 << 20;
/// Largest CPU bandwidth, in millicores (1024 cores).
pub const MAX_CPU_MILLIS: u64 = 1_024_000;
/// Environment variables with this prefix are how secret brokers pass secrets on the host.
pub const RESERVED_ENV_PREFIX: &str = "CELLOS_SECRET_";
/// Longest secret name.
const MAX_SECRET_NAME_LEN: usize = 128;

/// Validates one cell spec found at `at` (`spec`, or `spec.members[0].cell` in a formation).
pub(crate) fn check_cell_spec(spec: &ExecutionCellSpec, at: &str, p: &mut Problems) {
    if let Err(why) = check_dns_label(&spec.id) {
        p.push(format!("{at}.id"), why);
    }
    if let Some(run) = &spec.run {
        check_run(run, &spec.authority, &format!("{at}.run"), p);
        if run.limits.is_some() && spec.limits.is_some() {
            p.push(
                format!("{at}.limits"),
                "is also given as run.limits; set the cell's limits in one place",
            );
        }
    }
    if let Some(limits) = &spec.limits {
        check_limits(limits, &format!("{at}.limits"), p);
    }
    if let Some(lifetime) = &spec.lifetime {
        check_lifetime(spec, lifetime, at, p);
    }
    if let Some(fs) = &spec.filesystem {
        check_filesystem(fs, &format!("{at}.filesystem"), p);
    }
    check_authority(&spec.authority, &format!("{at}.authority"), p);
    if let Some(export) = &spec.export {
        check_export(export, &format!("{at}.export"), p);
    }
    if let Some(correlation) = &spec.correlation {
        if let Some(id) = &correlation.correlation_id {
            if let Err(why) = check_text(id) {
                p.push(format!("{at}.correlation.correlationId"), why);
            }
        }
    }
    if let Some(policy) = &spec.policy {
        if let Some(pack_id) = &policy.pack_id {
            if let Err(why) = check_dns_label(pack_id) {
                p.push(format!("{at}.policy.packId"), why);
            }
        }
        if let Some(version) = &policy.pack_version {
            if let Err(why) = check_text(version) {
                p.push(format!("{at}.policy.packVersion"), why);
            }
        }
    }
    if let Some(placement) = &spec.placement {
        if let Some(pool) = &placement.pool {
            if let Err(why) = check_text(pool) {
                p.push(format!("{at}.placement.pool"), why);
            }
        }
        check_string_map(
            &placement.node_selector,
            &format!("{at}.placement.nodeSelector"),
            p,
        );
    }
    if let Some(identity) = &spec.identity {
        if let Some(audience) = &identity.audience {
            if let Err(why) = check_text(audience) {
                p.push(format!("{at}.identity.audience"), why);
            }
        }
    }
}

fn check_lifetime(spec: &ExecutionCellSpec, lifetime: &Lifetime, at: &str, p: &mut Problems) {
    if lifetime.ttl_seconds.is_none() && lifetime.idle_timeout_seconds.is_none() {
        p.push(
            format!("{at}.lifetime"),
            "give ttlSeconds, idleTimeoutSeconds or both (or leave lifetime out)",
        );
    }
    if let Some(ttl) = lifetime.ttl_seconds {
        if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
            p.push(
                format!("{at}.lifetime.ttlSeconds"),
                format!("must be 1..={MAX_TTL_SECONDS} (7 days), not {ttl}"),
            );
        }
        if let Some(timeout) = spec.timeout_ms() {
            let ttl_ms = ttl.saturating_mul(1000);
            if ttl > 0 && timeout > ttl_ms {
                p.push(
                    format!("{at}.run.timeoutMs"),
                    format!("{timeout} exceeds lifetime.ttlSeconds ({ttl} s = {ttl_ms} ms)"),
                );
            }
        }
    }
    if let Some(idle) = lifetime.idle_timeout_seconds {
        if !(1..=MAX_TTL_SECONDS).contains(&idle) {
            p.push(
                format!("{at}.lifetime.idleTimeoutSeconds"),
                format!("must be 1..={MAX_TTL_SECONDS} (7 days), not {idle}"),
            );
        }
        if spec.run.is_some() {
            p.push(
                format!("{at}.lifetime.idleTimeoutSeconds"),
                "applies to session cells only (a cell with run ends with its workload); \
                 remove it or remove run",
            );
        }
    }
}

fn check_run(run: &RunSpec, authority: &AuthorityBundle, at: &str, p: &mut Problems) {
    match run.argv.first() {
        None => p.push(format!("{at}.argv"), "must not be empty"),
        Some(program) if program.is_empty() => p.push(
            format!("{at}.argv[0]"),
            "must name the program to run, not be empty",
        ),
        Some(_) => {}
    }
    for (i, arg) in run.argv.iter().enumerate() {
        if arg.contains('\0') {
            p.push(format!("{at}.argv[{i}]"), "must not contain NUL bytes");
        }
    }
    if let Some(cwd) = &run.cwd {
        check_absolute_path(cwd, &format!("{at}.cwd"), p);
    }
    let env_secrets: BTreeSet<&str> = match run.secret_delivery {
        SecretDeliveryMode::Env => authority.secret_refs.iter().map(String::as_str).collect(),
        SecretDeliveryMode::File => BTreeSet::new(),
    };
    for (key, value) in &run.env {
        let key_at = env_path(at, key);
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            p.push(
                &key_at,
                "is not a variable name (must be non-empty without '=' or NUL)",
            );
        } else if key.starts_with(RESERVED_ENV_PREFIX) {
            p.push(
                &key_at,
                format!("names starting with {RESERVED_ENV_PREFIX} are reserved for secrets; use authority.secretRefs"),
            );
        } else if env_secrets.contains(key.as_str()) {
            p.push(
                &key_at,
                "collides with a secretRefs entry delivered through the environment",
            );
        }
        if value.contains('\0') {
            p.push(&key_at, "value must not contain NUL bytes");
        }
    }
    if run.timeout_ms == Some(0) {
        p.push(format!("{at}.timeoutMs"), "must be greater than 0");
    }
    if let Some(limits) = &run.limits {
        check_limits(limits, &format!("{at}.limits"), p);
    }
}

/// `run.env.PATH`, or `run.env["odd key"]` when the key would not read as a path segment.
fn env_path(at: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if plain {
        format!("{at}.env.{key}")
    } else {
        format!("{at}.env[{key:?}]")
    }
}

fn check_limits(limits: &RunLimits, at: &str, p: &mut Problems) {
    if let Some(memory) = limits.memory_max_bytes {
        if memory < MIN_MEMORY_BYTES {
            p.push(
                format!("{at}.memoryMaxBytes"),
                format!("must be at least 1 MiB ({MIN_MEMORY_BYTES}), not {memory}"),
            );
        }
    }
    if limits.pids_max == Some(0) {
        p.push(format!("{at}.pidsMax"), "must be at least 1");
    }
    if let Some(cpu) = limits.cpu_millis {
        if !(1..=MAX_CPU_MILLIS).contains(&cpu) {
            p.push(
                format!("{at}.cpuMillis"),
                format!("must be 1..={MAX_CPU_MILLIS} millicores, not {cpu}"),
            );
        }
    }
}

fn check_filesystem(fs: &FilesystemSpec, at: &str, p: &mut Problems) {
    match &fs.rootfs {
        RootfsSpec::Host => {}
        RootfsSpec::Path(rootfs) => {
            check_absolute_path(&rootfs.path, &format!("{at}.rootfs.path"), p);
        }
        RootfsSpec::Oci(oci) => {
            check_absolute_path(&oci.oci_layout, &format!("{at}.rootfs.ociLayout"), p);
            check_image_ref(&oci.reference, &format!("{at}.rootfs.ref"), p);
        }
    }
    // Every target, with where it was declared, to report duplicates against the first one.
    let mut targets: BTreeMap<String, String> = BTreeMap::new();
    for (i, mount) in fs.mounts.iter().enumerate() {
        let mount_at = format!("{at}.mounts[{i}]");
        check_absolute_path(&mount.source, &format!("{mount_at}.source"), p);
        let target_at = format!("{mount_at}.target");
        check_target(&mount.target, &target_at, p);
        note_target(&mut targets, &mount.target, &target_at, p);
    }
    if let Some(landlock) = &fs.landlock {
        check_landlock(landlock, &format!("{at}.landlock"), p);
    }
    if let Some(ws) = &fs.workspace {
        let ws_at = format!("{at}.workspace");
        let target_at = format!("{ws_at}.target");
        check_target(&ws.target, &target_at, p);
        note_target(&mut targets, &ws.target, &target_at, p);
        if ws.size_bytes.is_some() && ws.source.is_some() {
            p.push(
                ws_at.clone(),
                "takes sizeBytes (a tmpfs) or source (a host directory), not both",
            );
        }
        if let Some(size) = &ws.size_bytes {
            match size.bytes() {
                Ok(0) => p.push(
                    format!("{ws_at}.sizeBytes"),
                    "must be greater than 0 (a tmpfs of size 0 would be unlimited)",
                ),
                Ok(_) => {}
                Err(e) => p.push(format!("{ws_at}.sizeBytes"), e.to_string()),
            }
        }
        if let Some(source) = &ws.source {
            check_absolute_path(source, &format!("{ws_at}.source"), p);
        }
    }
}

/// A requirement above what CellOS applies would promise rights nobody enforces.
fn check_landlock(landlock: &LandlockSpec, at: &str, p: &mut Problems) {
    if landlock.min_abi > HIGHEST_LANDLOCK_ABI {
        p.push(
            format!("{at}.minAbi"),
            format!(
                "Landlock ABI {} is not supported: CellOS applies Landlock rights up to ABI \
                 {HIGHEST_LANDLOCK_ABI}; use minAbi 0 (Landlock optional) to \
                 {HIGHEST_LANDLOCK_ABI}",
                landlock.min_abi
            ),
        );
    }
}

fn note_target(targets: &mut BTreeMap<String, String>, target: &str, at: &str, p: &mut Problems) {
    let key = normalize_path(target);
    match targets.get(&key) {
        Some(first) => p.push(at, format!("duplicates the target of {first}")),
        None => {
            targets.insert(key, at.to_owned());
        }
    }
}

/// A name in the layout's index, or a `sha256:` digest of 64 lowercase hex digits.
fn check_image_ref(reference: &str, at: &str, p: &mut Problems) {
    if reference.trim().is_empty() {
        p.push(at, "must not be empty");
    } else if let Some(hex) = reference.strip_prefix("sha256:") {
        let ok = hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            p.push(at, "a sha256: digest must have 64 lowercase hex digits");
        }
    } else if let Err(why) = check_text(reference) {
        p.push(at, why);
    }
}

/// `^[A-Z_][A-Z0-9_]{0,127}$`: usable as a file name and as an environment variable name.
fn is_secret_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_SECRET_NAME_LEN
        && (bytes[0].is_ascii_uppercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
}

/// A name usable as a file in `/run/secrets` and as an environment variable name.
pub fn check_secret_name(name: &str) -> Result<(), String> {
    if is_secret_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a secret name; use uppercase letters, digits and '_', not starting with a digit, at most {MAX_SECRET_NAME_LEN} characters"
        ))
    }
}

fn check_authority(authority: &AuthorityBundle, at: &str, p: &mut Problems) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, name) in authority.secret_refs.iter().enumerate() {
        let ref_at = format!("{at}.secretRefs[{i}]");
        if let Err(why) = check_secret_name(name) {
            p.push(&ref_at, why);
        }
        match seen.get(name.as_str()) {
            Some(first) => p.push(&ref_at, format!("duplicates secretRefs[{first}]")),
            None => {
                seen.insert(name, i);
            }
        }
    }
    let mut seen_rules = Vec::new();
    for (i, rule) in authority.egress_rules.iter().enumerate() {
        let rule_at = format!("{at}.egressRules[{i}]");
        match (&rule.host, &rule.cidr) {
            (Some(host), None) => {
                if let Err(why) = check_hostname_pattern(host) {
                    p.push(format!("{rule_at}.host"), why);
                }
            }
            (None, Some(cidr)) => {
                if let Err(why) = Cidr::parse(cidr) {
                    p.push(format!("{rule_at}.cidr"), why.to_string());
                }
            }
            _ => p.push(&rule_at, "needs exactly one of host or cidr"),
        }
        if !(1..=65535).contains(&rule.port) {
            p.push(
                format!("{rule_at}.port"),
                format!("{} is not a port", rule.port),
            );
        }
        match seen_rules.iter().position(|earlier| *earlier == rule) {
            Some(first) => p.push(&rule_at, format!("duplicates egressRules[{first}]")),
            None => seen_rules.push(rule),
        }
    }
    if let Some(dns) = &authority.dns_authority {
        for (i, pattern) in dns.hostname_allowlist.iter().enumerate() {
            if let Err(why) = check_hostname_pattern(pattern) {
                p.push(format!("{at}.dnsAuthority.hostnameAllowlist[{i}]"), why);
            }
        }
    }
    if let Some(justification) = &authority.dns_egress_justification {
        if let Err(why) = check_text(justification) {
            p.push(format!("{at}.dnsEgressJustification"), why);
        }
    }
}

fn check_export(export: &ExportSpec, at: &str, p: &mut Problems) {
    let mut target_names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, target) in export.targets.iter().enumerate() {
        let t_at = format!("{at}.targets[{i}]");
        if let Err(why) = check_file_name(&target.name) {
            p.push(format!("{t_at}.name"), why);
        }
        match target_names.get(target.name.as_str()) {
            Some(first) => p.push(
                format!("{t_at}.name"),
                format!("duplicates targets[{first}]"),
            ),
            None => {
                target_names.insert(&target.name, i);
            }
        }
        let kind = target.kind.as_str();
        let field_fits = |field: &str| match target.kind {
            ExportTargetKind::LocalPath => field == "path",
            ExportTargetKind::Http => field == "url",
            ExportTargetKind::S3 => {
                matches!(field, "bucket" | "prefix" | "region" | "endpoint")
            }
        };
        let remote = target.kind != ExportTargetKind::LocalPath;
        let fields = [
            ("path", target.path.is_some()),
            ("url", target.url.is_some()),
            ("bucket", target.bucket.is_some()),
            ("prefix", target.prefix.is_some()),
            ("region", target.region.is_some()),
            ("endpoint", target.endpoint.is_some()),
        ];
        for (field, set) in fields {
            if set && !field_fits(field) {
                p.push(
                    format!("{t_at}.{field}"),
                    format!("does not apply to {kind} targets"),
                );
            }
        }
        let missing = |field: &str, p: &mut Problems| {
            p.push(
                format!("{t_at}.{field}"),
                format!("is required for {kind} targets"),
            );
        };
        for (field, set) in [
            ("credentials", target.credentials.is_some()),
            ("retries", target.retries.is_some()),
            ("timeoutSeconds", target.timeout_seconds.is_some()),
        ] {
            if set && !remote {
                p.push(
                    format!("{t_at}.{field}"),
                    format!("does not apply to {kind} targets"),
                );
            }
        }
        if let Some(credentials) = &target.credentials {
            check_export_credentials(credentials, target.kind, &format!("{t_at}.credentials"), p);
        }
        if target.timeout_seconds == Some(0) {
            p.push(format!("{t_at}.timeoutSeconds"), "must be greater than 0");
        }
        if let Some(endpoint) = &target.endpoint {
            check_url(endpoint, &format!("{t_at}.endpoint"), p);
        }
        match target.kind {
            ExportTargetKind::LocalPath => match &target.path {
                None => missing("path", p),
                Some(path) => {
                    check_absolute_path(path, &format!("{t_at}.path"), p);
                }
            },
            ExportTargetKind::Http => match &target.url {
                None => missing("url", p),
                Some(url) => check_url(url, &format!("{t_at}.url"), p),
            },
            ExportTargetKind::S3 => match &target.bucket {
                None => missing("bucket", p),
                Some(bucket) => check_bucket(bucket, &format!("{t_at}.bucket"), p),
            },
        }
    }
    let mut artifact_names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, artifact) in export.artifacts.iter().enumerate() {
        let a_at = format!("{at}.artifacts[{i}]");
        if let Err(why) = check_file_name(&artifact.name) {
            p.push(format!("{a_at}.name"), why);
        }
        match artifact_names.get(artifact.name.as_str()) {
            Some(first) => p.push(
                format!("{a_at}.name"),
                format!("duplicates artifacts[{first}]"),
            ),
            None => {
                artifact_names.insert(&artifact.name, i);
            }
        }
        check_absolute_path(&artifact.path, &format!("{a_at}.path"), p);
        if let Some(target) = &artifact.target {
            if !target_names.contains_key(target.as_str()) {
                p.push(
                    format!("{a_at}.target"),
                    format!("{target:?} is not the name of an entry in export.targets"),
                );
            }
        }
    }
}

/// Each reference is a secret name of the right kind of target; S3 keys come in pairs.
fn check_export_credentials(
    credentials: &ExportCredentials,
    kind: ExportTargetKind,
    at: &str,
    p: &mut Problems,
) {
    for (field, name) in credentials.refs() {
        let fits = match kind {
            ExportTargetKind::S3 => field != "authorizationRef",
            ExportTargetKind::Http => field == "authorizationRef",
            ExportTargetKind::LocalPath => false,
        };
        if !fits {
            p.push(
                format!("{at}.{field}"),
                format!("does not apply to {} targets", kind.as_str()),
            );
        }
        if let Err(why) = check_secret_name(name) {
            p.push(format!("{at}.{field}"), why);
        }
    }
    if kind == ExportTargetKind::S3
        && credentials.access_key_id_ref.is_some() != credentials.secret_access_key_ref.is_some()
    {
        p.push(
            at,
            "accessKeyIdRef and secretAccessKeyRef go together; set both or neither",
        );
    }
}

/// The sink PUTs to `<url>/<cell-id>/<name>`, so only a plain http(s) URL with a host makes sense.
fn check_url(url: &str, at: &str, p: &mut Problems) {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host_present = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
    if !host_present || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        p.push(
            at,
            format!("{url:?} must be an http:// or https:// URL with a host"),
        );
    }
}

/// S3 bucket naming rules (the subset that matters for addressing).
fn check_bucket(bucket: &str, at: &str, p: &mut Problems) {
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && bucket
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && bucket
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if !ok {
        p.push(
            at,
            format!("{bucket:?} must be 3-63 lowercase letters, digits, '.' or '-'"),
        );
    }
}
