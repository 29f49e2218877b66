//! `--apply`: after an `improved` validation, write the `--set` values to the namespace of the
//! calling thread (the host's, from the CLI's main thread), keeping the old values for a
//! rollback line. Only the `--set` values: `--base` described the host, it was not a change.
//!
//! All or nothing: if one write fails, the ones already made are put back.

use super::ValidateError;
use super::settings::Setting;
use crate::kernel;
use crate::tune::TuneError;

use super::Applied;

/// Writes `set` here and returns the old values and the command that restores them.
pub fn apply(set: &[Setting]) -> Result<Applied, ValidateError> {
    let mut old = Vec::new();
    for s in set {
        old.push(kernel::read_sysctl(&s.key).map_err(TuneError::from)?);
    }
    for (i, s) in set.iter().enumerate() {
        if let Err(e) = kernel::write_sysctl(&s.key, &s.value) {
            for (done, value) in set[..i].iter().zip(&old) {
                let _ = kernel::write_sysctl(&done.key, value);
            }
            return Err(TuneError::from(e).into());
        }
    }
    let changes: Vec<(String, String, String)> = set
        .iter()
        .zip(old)
        .map(|(s, old)| (s.key.clone(), old, s.value.clone()))
        .collect();
    let rollback = rollback_command(&changes);
    Ok(Applied { changes, rollback })
}

/// `sysctl -w 'KEY=OLD' ...`, quoted for a POSIX shell (values like the port range hold spaces).
pub fn rollback_command(changes: &[(String, String, String)]) -> String {
    let mut cmd = "sysctl -w".to_string();
    for (key, old, _) in changes {
        cmd.push(' ');
        cmd.push_str(&shell_quote(&format!("{key}={old}")));
    }
    cmd
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_is_one_quoted_line() {
        let changes = vec![
            ("net.ipv4.tcp_tw_reuse".into(), "2".into(), "1".into()),
            (
                "net.ipv4.ip_local_port_range".into(),
                "32768 60999".into(),
                "1024 65535".into(),
            ),
        ];
        assert_eq!(
            rollback_command(&changes),
            "sysctl -w 'net.ipv4.tcp_tw_reuse=2' 'net.ipv4.ip_local_port_range=32768 60999'"
        );
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
    }
}
