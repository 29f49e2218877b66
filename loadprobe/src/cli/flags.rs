//! Library errors put in terms of the command line: the library says what is wrong with a
//! value, and this layer names the flag it came from.

use std::net::IpAddr;

use anyhow::Context;
use loadprobe::driver::{
    DriverError, Field, RequestError, Target, TargetError, parse_header, parse_source_ips,
};

/// The flag that sets a [`Field`] (the same in `run` and `tune validate`).
pub fn flag(field: Field) -> &'static str {
    match field {
        Field::Users => "--users",
        Field::Rate => "--rate",
        Field::MaxInFlight => "--max-in-flight",
        Field::Requests => "--requests",
        Field::Duration => "--duration",
        Field::RequestsPerConn => "--requests-per-conn",
        Field::HttpClient => "--http-client",
        Field::Workers => "--threads",
        Field::Timeouts => "--connect-timeout and --request-timeout",
        Field::SourceIps => "--source-ips",
        Field::Stages => "--stages",
        Field::Tls => "--sni, --cacert, --insecure, --cert, --key and --tls-resume",
        Field::Scenario => "--scenario",
    }
}

/// A driver error with its flag in front, when it concerns one.
pub fn driver_error(e: DriverError) -> anyhow::Error {
    match e {
        DriverError::Invalid { field, why } => anyhow::anyhow!("{} {why}", flag(field)),
        DriverError::Request(e) => request_error(e),
        DriverError::SourceIp(e) => anyhow::Error::new(e).context("--source-ips"),
        other => other.into(),
    }
}

/// A request error with its flag and value in front: `invalid --method "G T": ...`.
pub fn request_error(e: RequestError) -> anyhow::Error {
    let context = match &e {
        RequestError::Method(v) => format!("invalid --method {v:?}"),
        RequestError::Path(v) => format!("invalid --path {v:?}"),
        RequestError::Header(v) => format!("invalid --header {v:?}"),
        RequestError::Reserved(name) => format!("--header {name}"),
    };
    anyhow::Error::new(e).context(context)
}

/// `--target URL`.
pub fn target(url: &str) -> anyhow::Result<Target> {
    Target::parse(url).map_err(|e| {
        let context = match &e {
            TargetError::Invalid { url, .. } => format!("invalid --target {url:?}"),
        };
        anyhow::Error::new(e).context(context)
    })
}

/// `--source-ips LIST`.
pub fn source_ips(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    parse_source_ips(spec).with_context(|| format!("invalid --source-ips {spec:?}"))
}

/// `--header 'Name: value'`.
pub fn header(h: &str) -> anyhow::Result<(String, String)> {
    parse_header(h).map_err(request_error)
}

/// A privilege error with `--user NAME` in front, when it is about the user.
pub fn user_error(e: loadprobe::privileges::PrivilegeError) -> anyhow::Error {
    match e.user().map(str::to_string) {
        Some(name) => anyhow::Error::new(e).context(format!("--user {name}")),
        None => e.into(),
    }
}

/// A gate error with `--fail-if GATE` in front.
pub fn gate_error(e: loadprobe::compare::GateError) -> anyhow::Error {
    use loadprobe::compare::GateError;
    let gate = match &e {
        GateError::Syntax { expr: gate, .. }
        | GateError::UnknownPath { gate, .. }
        | GateError::UnknownRequest { gate, .. }
        | GateError::UnknownErrorClass { gate, .. } => format!("--fail-if {gate}"),
    };
    anyhow::Error::new(e).context(gate)
}
