//! Writing the record atomically: a reader (or a run killed mid-write) never sees half a file.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::{ReportError, RunRecord};

/// Writes `record` as pretty JSON to a temporary file next to `path`, then renames it over
/// `path` (same directory, so the rename is atomic).
pub fn write_atomic(path: &Path, record: &RunRecord) -> Result<(), ReportError> {
    let json = serde_json::to_vec_pretty(record)?;
    let err = |source| ReportError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| err(std::io::Error::other("not a file name")))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}
