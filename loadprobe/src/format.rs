//! Numbers as the reports print them: thousands separated, one decimal where it means something,
//! changes with a sign. Shared by every renderer so text, markdown and HTML agree digit for digit.

/// `14046` → `14,046`; `10402.34` → `10,402.3`; `0.5` → `0.50`.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return if v.is_nan() {
            "n/a".into()
        } else if v > 0.0 {
            "∞".into()
        } else {
            "-∞".into()
        };
    }
    if v.abs() >= 1e15 {
        // Beyond any real count: scientific notation rather than misleading digits.
        return format!("{v:.3e}");
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let a = v.abs();
    if a.fract() == 0.0 {
        return format!("{sign}{}", group(a as u64));
    }
    if a < 10.0 {
        // Small ratios (headroom 2.35) need two decimals to say anything.
        return format!("{sign}{a:.2}");
    }
    let rounded = (a * 10.0).round() / 10.0;
    let whole = rounded.trunc();
    let tenth = ((rounded - whole) * 10.0).round() as u64;
    format!("{sign}{}.{tenth}", group(whole as u64))
}

/// A value with an explicit sign: `+1,234`, `-0.50`, `0`.
pub fn signed(v: f64) -> String {
    if v > 0.0 {
        format!("+{}", number(v))
    } else {
        number(v)
    }
}

/// A relative change in percent: `+12.3%`, `-100.0%`, `0.0%`.
pub fn percent(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 {
            "+∞%".into()
        } else {
            "-∞%".into()
        };
    }
    if v > 0.0 {
        format!("+{v:.1}%")
    } else if v < 0.0 {
        format!("-{:.1}%", -v)
    } else {
        "0.0%".into()
    }
}

/// The change from `base` to `value`: `+1,234 (+12.3%)`. The relative part is left out when the
/// base is 0 (any change from 0 is infinite) and becomes a factor (`×52.3`) beyond +1000 %,
/// where percentages stop being readable; a change too small to show in the values' own
/// precision is `0`.
pub fn change(base: f64, value: f64) -> String {
    let d = value - base;
    let shown = signed(d);
    if d == 0.0
        || shown
            .trim_start_matches(['-', '+'])
            .trim_start_matches(['0', '.'])
            .is_empty()
    {
        "0".into()
    } else if base == 0.0 {
        shown
    } else if d / base.abs() > 10.0 && base > 0.0 {
        format!("{shown} (×{})", number(value / base))
    } else {
        format!("{shown} ({})", percent(d / base.abs() * 100.0))
    }
}

fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One decimal, none when it is 0: `1.5`, `2` (axis labels, seconds in words).
pub fn tenths(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_string)
}

/// Cuts `s` to `width` characters, ending in `…` when cut.
pub fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Words of `s` in lines of at most `width` characters (a longer word gets a line of its own).
pub fn wrap(s: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in s.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(number(14046.0), "14,046");
        assert_eq!(number(1234567.0), "1,234,567");
        assert_eq!(number(10402.34), "10,402.3");
        assert_eq!(number(99.96), "100.0");
        assert_eq!(number(2.345), "2.35");
        assert_eq!(number(-890.25), "-890.3");
        assert_eq!(number(0.0), "0");
        assert_eq!(change(10402.3, 9512.1), "-890.2 (-8.6%)");
        assert_eq!(change(0.0, 14080.0), "+14,080");
        assert_eq!(change(5.0, 5.0), "0");
        assert_eq!(change(2.0047, 2.0021), "0");
        assert_eq!(change(0.03, 1764.5), "+1,764.5 (×58,816.7)");
        assert_eq!(percent(-100.0), "-100.0%");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(wrap("aa bb cc dd", 5), vec!["aa bb", "cc dd"]);
    }
}
