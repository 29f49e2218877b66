//! Parsers for the numeric options, one per kind, shared by every subcommand so that the same
//! kind of value is written, and bounded, the same way everywhere. Each bound keeps a value
//! out of the range where it would overflow a clock, an allocation or the thread limit; a
//! value outside it is a one-line usage error before anything starts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest duration any option takes: a year. Beyond it a deadline computed from the
/// clock could overflow, and no run or timeout is meant to be that long.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Most runtime threads (`--threads`): more than any machine has cores to give them.
pub const MAX_THREADS: u64 = 1024;

/// Largest response body `serve --body-bytes` builds (it is allocated once, up front).
pub const MAX_BODY_BYTES: u64 = 256 << 20;

/// A wall-clock moment: RFC 3339 in UTC (`2026-12-04T10:00:00Z`, fractions allowed) or Unix
/// seconds (`1796378400`, `1796378400.5`).
pub fn moment(s: &str) -> Result<SystemTime, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|d| *d < Duration::from_secs(1 << 40))
            .map(|d| UNIX_EPOCH + d)
            .ok_or_else(|| format!("invalid time {s:?}: Unix seconds out of range"));
    }
    humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!(
            "invalid time {s:?} ({e}): give RFC 3339 in UTC, e.g. 2026-12-04T10:00:00Z, or Unix \
             seconds"
        )
    })
}

/// The largest stage target (users, or starts a second): far beyond what one host drives.
const MAX_STAGE_TARGET: f64 = 1e7;

/// `30s:100,1m:500,30s:0`: stages of DURATION:TARGET, each ramping linearly from the previous
/// value (the first from `--users`/`--rate`, or 0) to its target.
pub fn stages(s: &str) -> Result<loadprobe::driver::Curve, String> {
    let stages = s
        .split(',')
        .map(str::trim)
        .map(|part| {
            let (d, target) = part.split_once(':').ok_or_else(|| {
                format!("invalid stage {part:?}: expected DURATION:TARGET, e.g. 30s:100")
            })?;
            let duration = positive_duration(d).map_err(|e| format!("stage {part:?}: {e}"))?;
            let target = target
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|t| (0.0..=MAX_STAGE_TARGET).contains(t))
                .ok_or_else(|| {
                    format!("stage {part:?}: the target must be a number from 0 to 1e7")
                })?;
            Ok(loadprobe::driver::Stage { duration, target })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(loadprobe::driver::Curve::new(0.0, stages))
}

/// `250ms`, `10s`, `2m`, `1h`, `500us`; a bare number is seconds. At most [`MAX_DURATION`].
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 500ms, 10s, 2m)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use us, ms, s, m or h)"
            ));
        }
    };
    match Duration::try_from_secs_f64(n * scale) {
        Ok(d) if d <= MAX_DURATION => Ok(d),
        _ => Err(format!(
            "duration {s:?} is out of range (at most {}h)",
            MAX_DURATION.as_secs() / 3600
        )),
    }
}

/// A duration that must be more than zero (timeouts, a measured window).
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err(format!("{s:?} is not a positive duration")),
        d => Ok(d),
    }
}

/// Requests per second: a positive, finite number.
pub fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a positive rate")),
    }
}

/// A share in percent, `1%` or `1` (0 to 100), as a fraction: `0.01`.
pub fn percent(s: &str) -> Result<f64, String> {
    let number = s.trim().strip_suffix('%').unwrap_or(s.trim());
    match number.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p / 100.0),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100, e.g. 1%")),
    }
}

/// Runtime threads, 1 to [`MAX_THREADS`].
pub fn threads(s: &str) -> Result<usize, String> {
    match s.parse::<u64>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n as usize),
        _ => Err(format!("{s:?} is not between 1 and {MAX_THREADS}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_fractions() {
        assert_eq!(percent("1%"), Ok(0.01));
        assert_eq!(percent("0"), Ok(0.0));
        assert_eq!(percent(" 12.5 % "), Ok(0.125));
        for bad in ["101%", "-1", "x", "", "NaN%"] {
            assert!(
                percent(bad).unwrap_err().contains("not a percentage"),
                "{bad}"
            );
        }
    }

    #[test]
    fn stage_lists() {
        let c = stages("30s:100, 1m:500,30s:0").unwrap();
        let s = c.stages();
        assert_eq!(s.len(), 3);
        assert_eq!(
            (s[1].duration, s[1].target),
            (Duration::from_secs(60), 500.0)
        );
        for bad in [
            "", "10s", "0s:5", "10s:-1", "10s:x", "10s:1e9", "10s:nan", "10s:5,",
        ] {
            assert!(stages(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn moments() {
        let at = UNIX_EPOCH + Duration::from_secs(1_796_378_400);
        assert_eq!(moment("1796378400"), Ok(at));
        assert_eq!(moment("2026-12-04T10:00:00Z"), Ok(at));
        assert_eq!(
            moment("2026-12-04T10:00:00.5Z"),
            Ok(at + Duration::from_millis(500))
        );
        assert_eq!(moment("1796378400.5"), Ok(at + Duration::from_millis(500)));
        for bad in ["tomorrow", "inf", "-1", "1e300", "2026-12-04T25:00:00Z"] {
            assert!(moment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        assert_eq!(duration("8760h"), Ok(MAX_DURATION));
        for bad in [
            "5 parsecs",
            "",
            "inf",
            "1e300",
            "-1",
            "8761h",
            "5000000000000000000s",
        ] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        assert!(positive_duration("0ms").is_err());
        assert_eq!(positive_duration("1us"), Ok(Duration::from_micros(1)));
    }

    #[test]
    fn rates_and_threads() {
        assert_eq!(rate("0.5"), Ok(0.5));
        for bad in ["0", "-1", "inf", "NaN", "1e400", "x"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
        assert_eq!(threads("4"), Ok(4));
        for bad in ["0", "1025", "-1", "18446744073709551616"] {
            assert!(threads(bad).is_err(), "{bad}");
        }
    }
}
