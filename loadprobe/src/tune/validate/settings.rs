//! The sysctls a validation sets: `KEY=VALUE` parsing, which namespace each one acts in, and the
//! checks that keep every write inside the topology.
//!
//! Only `net.*` sysctls can be per network namespace; anything else (`vm.*`, `kernel.*`) written
//! from a thread inside a namespace changes the host, so it is refused before anything is
//! created. A `net.*` sysctl that the host has but a fresh namespace lacks is global (e.g.
//! `tcp_max_orphans`, docs/kernel.md §5) or shows it read-only (`net.core.rmem_max`): the write
//! inside the topology fails, and that is reported as "not per network namespace".

use serde::Serialize;

use super::ValidateError;
use crate::kernel::{self, KernelError};
use crate::model::Side;
use crate::tune::netns::Topology;
use crate::tune::{Place, TuneError, check};

/// The placement table (documented in docs/tuning.md). Other `net.*` sysctls go to both.
pub const PLACEMENTS: &[(&str, Place)] = &[
    ("net.ipv4.tcp_tw_reuse", Place::Client),
    ("net.ipv4.tcp_tw_reuse_delay", Place::Client),
    ("net.ipv4.ip_local_port_range", Place::Client),
    ("net.ipv4.ip_local_reserved_ports", Place::Client),
    ("net.ipv4.tcp_timestamps", Place::Client),
    ("net.core.somaxconn", Place::Server),
    ("net.ipv4.tcp_max_syn_backlog", Place::Server),
    ("net.ipv4.tcp_max_tw_buckets", Place::Both),
    ("net.ipv4.tcp_fin_timeout", Place::Both),
];

/// One `KEY=VALUE`, with where it goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// Dotted name, e.g. `net.ipv4.tcp_tw_reuse`.
    pub key: String,
    pub value: String,
    pub place: Place,
}

impl Setting {
    /// Parses `KEY=VALUE` (`net/ipv4/x` is accepted for `net.ipv4.x`), given to `flag`.
    pub fn parse(flag: &str, s: &str) -> Result<Setting, ValidateError> {
        let bad = || ValidateError::Syntax {
            flag: flag.to_string(),
            given: s.to_string(),
        };
        let (key, value) = s.split_once('=').ok_or_else(bad)?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            return Err(bad());
        }
        let key = if key.contains('/') && !key.contains('.') {
            key.replace('/', ".")
        } else {
            key.to_string()
        };
        let place = PLACEMENTS
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(Place::Both, |(_, p)| *p);
        Ok(Setting {
            key,
            value: value.to_string(),
            place,
        })
    }

    pub fn display(&self) -> String {
        format!("{}={}", self.key, self.value)
    }
}

/// Checks a whole list of settings before anything is created: names are network sysctls
/// that exist on this kernel, and no key is given twice in one list. `flag` names the list in
/// errors (the command line's flag, or what the list is for).
pub fn check_all(flag: &str, settings: &[Setting]) -> Result<(), ValidateError> {
    for (i, s) in settings.iter().enumerate() {
        if settings[..i].iter().any(|o| o.key == s.key) {
            return Err(ValidateError::Twice {
                flag: flag.to_string(),
                key: s.key.clone(),
            });
        }
        check_name(&s.key)?;
    }
    Ok(())
}

/// A name must be under `net.` and exist here (read in the calling thread's namespace, the
/// host's when called from the main thread; reading changes nothing).
fn check_name(key: &str) -> Result<(), ValidateError> {
    if !key.starts_with("net.") {
        return Err(ValidateError::NotNetwork(key.to_string()));
    }
    match kernel::read_sysctl(key) {
        Err(KernelError::Missing { .. }) => Err(ValidateError::Unknown {
            key: key.to_string(),
            hint: hint(key),
        }),
        Err(KernelError::InvalidName(_)) => Err(ValidateError::Unknown {
            key: key.to_string(),
            hint: String::new(),
        }),
        // Exists (even if unreadable, e.g. write-only): the write will tell.
        _ => Ok(()),
    }
}

/// What `tune check` knows about a sysctl this kernel lacks (`tcp_tw_recycle`).
fn hint(key: &str) -> String {
    check::KNOWN
        .iter()
        .find(|k| k.key == key)
        .map(|k| format!(" ({})", k.meaning))
        .unwrap_or_default()
}

/// Writes `settings` into the namespaces of `topology` where each acts.
pub fn apply(topology: &Topology, settings: &[&Setting]) -> Result<(), ValidateError> {
    for s in settings {
        for &host in s.place.hosts() {
            topology
                .set_sysctl(host, &s.key, &s.value)
                .map_err(|e| match e {
                    // As root, a net.* sysctl the host has but a namespace lacks, or may only
                    // read, is global (the namespace sees the host's value read-only).
                    TuneError::Kernel(
                        KernelError::Missing { .. } | KernelError::PermissionDenied { .. },
                    ) => ValidateError::NotPerNetns(s.key.clone()),
                    e => ValidateError::Tune(e),
                })?;
        }
    }
    Ok(())
}

/// The value of every key in `keys` (plus the ones `tune check` reports) in one namespace of
/// `topology`, for validate.json: what the runs really ran with.
pub fn read_all(
    topology: &Topology,
    host: Side,
    keys: &[&str],
) -> Result<Vec<(String, String)>, ValidateError> {
    let mut names: Vec<&str> = kernel::SYSCTLS.to_vec();
    names.extend(keys.iter().filter(|k| !kernel::SYSCTLS.contains(k)));
    let values = topology.run_in(host, || {
        names
            .iter()
            .filter_map(|k| kernel::read_sysctl(k).ok().map(|v| (k.to_string(), v)))
            .collect()
    })?;
    Ok(values)
}
