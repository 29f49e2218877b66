//! `run --scenario FILE`: a TOML file of named, weighted requests, read into a [`Mix`]. Every
//! problem names the file and the line it is on, before anything starts.
//!
//! ```toml
//! [[request]]
//! name = "search"          # letters, digits, - and _: the record's by_request.NAME
//! path = "/search?q=tcp"   # default: the target URL's path
//! weight = 8               # default 1; 0 leaves it out
//! mode = "keep-alive"      # default: the run's --mode
//!
//! [[request]]
//! name = "login"
//! method = "POST"
//! headers = ["Content-Type: application/json"]
//! body_file = "login.json" # relative to this file; or body = "..."
//! mode = "client-close"
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;
use toml::Spanned;

use super::mix::{Mix, MixRequest, ModeClash, ZeroWeight};
use super::request::{RequestError, RequestSpec, parse_header};
use crate::model::Mode;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    request: Vec<Spanned<Entry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Spanned<String>,
    method: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    #[serde(default)]
    headers: Vec<Spanned<String>>,
    body: Option<Spanned<String>>,
    body_file: Option<Spanned<String>>,
    weight: Option<Spanned<u32>>,
    mode: Option<Spanned<Mode>>,
}

/// A scenario file that cannot be run: where, and what is wrong there.
#[derive(Debug, thiserror::Error)]
#[error("{}{}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ScenarioError {
    pub path: PathBuf,
    /// 1-based; `None` when the file itself cannot be read.
    pub line: Option<usize>,
    #[source]
    pub problem: Problem,
}

#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("cannot read the scenario file")]
    Read(#[source] std::io::Error),
    /// The TOML parser's or serde's own message (an unknown key, a wrong type, a missing name).
    #[error("{0}")]
    Toml(String),
    #[error("no requests: add at least one [[request]] table")]
    Empty,
    #[error("invalid name {0:?}: use letters, digits, '-' and '_'")]
    Name(String),
    #[error("duplicate request name {name:?} (first on line {first})")]
    Duplicate { name: String, first: usize },
    #[error("invalid {what} {value:?}")]
    Request {
        what: &'static str,
        value: String,
        #[source]
        source: RequestError,
    },
    #[error("give body or body_file, not both")]
    TwoBodies,
    #[error("cannot read body_file {}", path.display())]
    BodyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    ZeroWeight(#[from] ZeroWeight),
    #[error(transparent)]
    ModeClash(ModeClash),
}

/// Reads the scenario at `path`; `default_path` is the path of requests that give none (the
/// target URL's), `run_mode` the mode of requests that give none (`--mode`).
pub fn load(
    path: &Path,
    default_path: &str,
    run_mode: Mode,
    seed: u64,
) -> Result<Mix, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
        path: path.to_path_buf(),
        line: None,
        problem: Problem::Read(e),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir, default_path, run_mode, seed).map_err(|(span, problem)| ScenarioError {
        path: path.to_path_buf(),
        line: Some(line_of(&text, span.start)),
        problem,
    })
}

type Located = (Range<usize>, Problem);

fn parse(
    text: &str,
    dir: &Path,
    default_path: &str,
    run_mode: Mode,
    seed: u64,
) -> Result<Mix, Located> {
    let file: File = toml::from_str(text).map_err(|e| {
        (
            e.span().unwrap_or(0..0),
            Problem::Toml(e.message().to_string()),
        )
    })?;
    let Some(first) = file.request.first() else {
        return Err((0..0, Problem::Empty));
    };
    let first_span = first.span();
    let mut requests = Vec::with_capacity(file.request.len());
    let mut names: Vec<(String, usize)> = Vec::new();
    for entry in &file.request {
        let e = entry.get_ref();
        let name = e.name.get_ref();
        if !is_name(name) {
            return Err((e.name.span(), Problem::Name(name.clone())));
        }
        if let Some((_, first)) = names.iter().find(|(n, _)| n == name) {
            return Err((
                e.name.span(),
                Problem::Duplicate {
                    name: name.clone(),
                    first: line_of(text, *first),
                },
            ));
        }
        names.push((name.clone(), e.name.span().start));
        let mut spec = RequestSpec {
            path: default_path.to_string(),
            ..RequestSpec::default()
        };
        let invalid = |what, value: &Spanned<String>, source| {
            let value_text = value.get_ref().clone();
            (
                value.span(),
                Problem::Request {
                    what,
                    value: value_text,
                    source,
                },
            )
        };
        if let Some(m) = &e.method {
            spec.method = m.get_ref().clone();
            if let Err(err @ RequestError::Method(_)) = spec.validate() {
                return Err(invalid("method", m, err));
            }
        }
        if let Some(p) = &e.path {
            spec.path = p.get_ref().clone();
            if let Err(err) = spec.validate() {
                return Err(invalid("path", p, err));
            }
        }
        for h in &e.headers {
            spec.headers
                .push(parse_header(h.get_ref()).map_err(|err| invalid("header", h, err))?);
        }
        spec.body = match (&e.body, &e.body_file) {
            (Some(_), Some(f)) => return Err((f.span(), Problem::TwoBodies)),
            (Some(b), None) => Bytes::from(b.get_ref().clone()),
            (None, Some(f)) => {
                let file = dir.join(f.get_ref());
                let bytes = std::fs::read(&file)
                    .map_err(|source| (f.span(), Problem::BodyFile { path: file, source }))?;
                Bytes::from(bytes)
            }
            (None, None) => Bytes::new(),
        };
        requests.push(MixRequest {
            name: name.clone(),
            spec,
            weight: e.weight.as_ref().map_or(1, |w| *w.get_ref()),
            mode: e.mode.as_ref().map(|m| *m.get_ref()),
        });
    }
    let mix = Mix {
        requests,
        seed,
        named: true,
    };
    if let Err(clash) = mix.check_modes(run_mode) {
        let e = file.request[clash.index].get_ref();
        let span = e
            .mode
            .as_ref()
            .map_or_else(|| file.request[clash.index].span(), Spanned::span);
        return Err((span, Problem::ModeClash(clash)));
    }
    if mix.total_weight() == 0 {
        let span = file.request[0]
            .get_ref()
            .weight
            .as_ref()
            .map_or(first_span, Spanned::span);
        return Err((span, ZeroWeight.into()));
    }
    Ok(mix)
}

/// A request name: what a record path can hold as one key.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The 1-based line of byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_at(text: &str, dir: &Path) -> Result<Mix, (usize, String)> {
        parse(text, dir, "/", Mode::ClientClose, 1).map_err(|(span, problem)| {
            (
                line_of(text, span.start),
                crate::error_chain::one_line(&problem),
            )
        })
    }

    fn err(text: &str) -> (usize, String) {
        parse_at(text, Path::new(".")).expect_err("rejected")
    }

    #[test]
    fn reads_requests_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("q.json"), b"{\"q\":1}").unwrap();
        let mix = parse_at(
            "[[request]]\nname = \"home\"\n\n[[request]]\nname = \"query\"\nmethod = \"POST\"\n\
             path = \"/q?x=1\"\nheaders = [\"Content-Type: application/json\"]\n\
             body_file = \"q.json\"\nweight = 3\nmode = \"keep-alive\"\n",
            dir.path(),
        )
        .unwrap();
        assert!(mix.named);
        let [home, query] = &mix.requests[..] else {
            panic!("two requests")
        };
        assert_eq!(
            (
                home.name.as_str(),
                home.spec.method.as_str(),
                home.spec.path.as_str()
            ),
            ("home", "GET", "/")
        );
        assert_eq!((home.weight, home.mode), (1, None));
        assert_eq!(query.spec.path, "/q?x=1");
        assert_eq!(&query.spec.body[..], b"{\"q\":1}");
        assert_eq!(query.spec.headers[0].0, "Content-Type");
        assert_eq!((query.weight, query.mode), (3, Some(Mode::KeepAlive)));
    }

    #[test]
    fn each_problem_names_its_line() {
        let one = "[[request]]\nname = \"a\"\n";
        for (text, line, expect) in [
            (format!("{one}wieght = 2\n"), 3, "unknown field `wieght`"),
            (
                format!("{one}[[request]]\nname = \"a\"\n"),
                4,
                "duplicate request name \"a\" (first on line 2)",
            ),
            (
                format!("{one}method = \"G T\"\n"),
                3,
                "invalid method \"G T\": must be an HTTP token",
            ),
            (
                format!("{one}headers = [\"x\",\n  \"Connection: close\"]\n"),
                3,
                "invalid header \"x\"",
            ),
            (
                format!("{one}headers = [\n  \"Connection: close\"]\n"),
                4,
                "invalid header \"Connection: close\": set by the driver",
            ),
            (
                format!("{one}path = \"nope\"\n"),
                3,
                "invalid path \"nope\"",
            ),
            (
                format!("{one}body_file = \"missing.json\"\n"),
                3,
                "cannot read body_file ./missing.json",
            ),
            (
                format!("{one}body = \"x\"\nbody_file = \"b\"\n"),
                4,
                "give body or body_file, not both",
            ),
            (format!("{one}weight = 0\n"), 3, "the weights add up to 0"),
            (format!("{one}weight = -1\n"), 3, "invalid value"),
            (
                format!("{one}mode = \"sideways\"\n"),
                3,
                "unknown variant `sideways`",
            ),
            (
                format!("{one}\n[[request]]\nname = \"b\"\nmode = \"reset\"\n"),
                6,
                "reset cannot be mixed",
            ),
            (
                "[[request]]\nname = \"a.b\"\n".into(),
                2,
                "invalid name \"a.b\"",
            ),
            (
                "[[request]]\nmethod = \"GET\"\n".into(),
                1,
                "missing field `name`",
            ),
            ("request = []\n".into(), 1, "no requests"),
            (
                "[[reqest]]\nname = \"a\"\n".into(),
                1,
                "unknown field `reqest`",
            ),
            ("[[request]\n".into(), 1, ""),
        ] {
            let (got_line, msg) = err(&text);
            assert!(msg.contains(expect), "{text:?}: {msg}");
            assert_eq!(got_line, line, "{text:?}: {msg}");
            assert!(!msg.contains('\n'), "{text:?}: not one line: {msg}");
        }
    }
}
