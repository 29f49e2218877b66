//! Reading run records from files a person hands over: every way a file can be wrong ends in one
//! line naming the file and the problem, never in a panic.

use std::path::Path;

use serde_json::Value;

use crate::report::{HISTOGRAM_ENCODING, RunRecord, SCHEMA, decode_histogram};

/// The schema family this build reads, and the newest version in it that it knows.
const FAMILY: &str = "loadprobe.run/";
const KNOWN_VERSION: u32 = 1;

/// Why a file is not a record this build can use. `Display` is one line starting with the file.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{file}: no such file")]
    Missing { file: String },
    #[error("{file}: cannot read")]
    Io {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: empty file, not a run record")]
    Empty { file: String },
    #[error("{file}: not JSON: {reason}")]
    NotJson { file: String, reason: String },
    #[error("{file}: truncated: the JSON ends early ({reason})")]
    Truncated { file: String, reason: String },
    #[error("{file}: not a loadprobe run record: {reason}")]
    NotARecord { file: String, reason: String },
    #[error("{file}: unknown schema {schema:?} (this loadprobe reads {SCHEMA})")]
    UnknownSchema { file: String, schema: String },
    #[error(
        "{file}: schema {schema} is newer than this loadprobe reads ({SCHEMA}); use a newer \
         loadprobe"
    )]
    NewerSchema { file: String, schema: String },
    #[error("{file}: {schema} record lacks what compare needs: {reason}")]
    Fields {
        file: String,
        schema: String,
        reason: String,
    },
    #[error("{file}: histograms.{name}: {reason}")]
    Histogram {
        file: String,
        name: &'static str,
        reason: String,
    },
}

/// Reads the record in `path`.
pub fn read_record(path: &Path) -> Result<RunRecord, RecordError> {
    let file = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => RecordError::Missing { file: file.clone() },
        _ => RecordError::Io {
            file: file.clone(),
            source,
        },
    })?;
    parse_record(&file, &bytes)
}

/// Parses a record from `bytes`; `file` names it in errors. Records of an older version of the
/// schema are read when they have the fields this build needs (the error names the first one
/// missing); a newer version is refused, since its fields may have changed meaning.
pub fn parse_record(file: &str, bytes: &[u8]) -> Result<RunRecord, RecordError> {
    let file = file.to_string();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(RecordError::Empty { file });
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        let reason = e.to_string();
        if e.is_eof() {
            RecordError::Truncated {
                file: file.clone(),
                reason,
            }
        } else {
            RecordError::NotJson {
                file: file.clone(),
                reason,
            }
        }
    })?;
    let schema = match value.get("schema") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(RecordError::NotARecord {
                file,
                reason: "\"schema\" is not a string".into(),
            });
        }
        None if value.is_object() => {
            return Err(RecordError::NotARecord {
                file,
                reason: "no \"schema\" key".into(),
            });
        }
        None => {
            return Err(RecordError::NotARecord {
                file,
                reason: "not a JSON object".into(),
            });
        }
    };
    let version = schema
        .strip_prefix(FAMILY)
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| RecordError::UnknownSchema {
            file: file.clone(),
            schema: schema.clone(),
        })?;
    if version > KNOWN_VERSION {
        return Err(RecordError::NewerSchema { file, schema });
    }
    let mut record: RunRecord = serde_json::from_value(value).map_err(|e| RecordError::Fields {
        file: file.clone(),
        schema: schema.clone(),
        reason: e.to_string(),
    })?;
    check_histograms(&file, &record)?;
    // Older versions that parsed are read as this one: their fields meant the same.
    record.schema = SCHEMA.to_string();
    Ok(record)
}

/// The histograms must decode: merging and the latency charts read them.
fn check_histograms(file: &str, r: &RunRecord) -> Result<(), RecordError> {
    let h = &r.histograms;
    if h.encoding != HISTOGRAM_ENCODING {
        return Err(RecordError::Histogram {
            file: file.to_string(),
            name: "encoding",
            reason: format!(
                "unknown encoding {:?} (expected {HISTOGRAM_ENCODING})",
                h.encoding
            ),
        });
    }
    for (name, encoded) in [
        ("total", &h.total),
        ("total_uncorrected", &h.total_uncorrected),
        ("connect", &h.connect),
        ("first_byte", &h.first_byte),
    ] {
        decode_histogram(encoded).map_err(|e| RecordError::Histogram {
            file: file.to_string(),
            name,
            reason: e.to_string(),
        })?;
    }
    if let Some(encoded) = &h.tls_handshake {
        decode_histogram(encoded).map_err(|e| RecordError::Histogram {
            file: file.to_string(),
            name: "tls_handshake",
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::sample::record;

    use crate::model::Mode;

    fn good() -> String {
        serde_json::to_string_pretty(&record(Mode::ClientClose, &[100, 200, 300], 0, 1)).unwrap()
    }

    fn err(bytes: &str) -> String {
        parse_record("x.json", bytes.as_bytes())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn reads_a_good_record() {
        let r = parse_record("x.json", good().as_bytes()).unwrap();
        assert_eq!(r.requests.total, 3);
    }

    #[test]
    fn each_bad_input_is_one_line_naming_the_file() {
        let text = good();
        let cut = &text[..text.len() / 2];
        let newer = text.replace("loadprobe.run/1", "loadprobe.run/2");
        let other = text.replace("loadprobe.run/1", "something.else/1");
        let lacking = {
            let mut v: Value = serde_json::from_str(&text).unwrap();
            v.as_object_mut().unwrap().remove("latency_us");
            v.to_string()
        };
        let bad_hist = {
            let mut v: Value = serde_json::from_str(&text).unwrap();
            v["histograms"]["connect"] = Value::String("!!".into());
            v.to_string()
        };
        for (input, expect) in [
            ("", "empty file"),
            ("hello", "not JSON"),
            ("[1, 2]", "not a JSON object"),
            ("{\"a\": 1}", "no \"schema\" key"),
            (cut, "truncated"),
            (&newer, "loadprobe.run/2 is newer"),
            (&other, "unknown schema \"something.else/1\""),
            (
                &lacking,
                "lacks what compare needs: missing field `latency_us`",
            ),
            (&bad_hist, "histograms.connect"),
        ] {
            let e = err(input);
            assert!(e.starts_with("x.json: "), "{e}");
            assert!(e.contains(expect), "{expect:?} not in {e}");
            assert!(!e.contains('\n'), "not one line: {e}");
        }
    }

    #[test]
    fn an_older_version_with_the_fields_is_read() {
        let old = good().replace("loadprobe.run/1", "loadprobe.run/0");
        let r = parse_record("old.json", old.as_bytes()).unwrap();
        assert_eq!(r.schema, SCHEMA);
        let e = err(&old.replace("\"histograms\"", "\"hist\""));
        assert!(e.contains("loadprobe.run/0 record lacks"), "{e}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = read_record(Path::new("/nonexistent/a.json")).unwrap_err();
        assert_eq!(e.to_string(), "/nonexistent/a.json: no such file");
    }
}
