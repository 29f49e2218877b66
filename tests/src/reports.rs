//! Checking the reports loadprobe writes: golden files for text and Markdown, and the HTML
//! pages as headless Chromium renders them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// tests/golden/: fixed records of real runs and the reports expected from them.
pub fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden")
}

/// Runs `loadprobe ARGS` in tests/golden/, so records are named by their file names.
pub fn loadprobe(args: &[&str]) -> Output {
    Command::new(crate::loadprobe_bin())
        .args(args)
        .current_dir(golden())
        .env_remove("NO_COLOR")
        .output()
        .expect("loadprobe runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory for one test's files, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("lp-report-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `actual` must equal tests/golden/`name` (or replaces it under UPDATE_GOLDEN=1).
pub fn assert_golden(name: &str, actual: &str) {
    let path = golden().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .map_or_else(|| "the length".to_string(), |i| format!("line {}", i + 1));
        panic!(
            "{name} differs from the golden file at {line} (UPDATE_GOLDEN=1 rewrites it)\n\
             --- expected\n{expected}\n--- actual\n{actual}"
        );
    }
}

/// Chromium, if this machine has it. Without it a test is skipped, except in CI ([`crate::must_run`]),
/// where it fails (`cargo xtask setup` installs it).
pub fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
    });
    if found.is_none() {
        if crate::must_run() {
            panic!("chromium not installed: cargo xtask setup installs it");
        }
        eprintln!("skipped: chromium not installed (cargo xtask setup installs it)");
    }
    found
}

/// An HTML page as headless Chromium rendered it.
pub struct Rendered {
    /// The screenshot, as PNG.
    pub png: Vec<u8>,
    /// The DOM after rendering.
    pub dom: String,
    /// What the page logged to the console (`...:CONSOLE(line)] "message"`) or threw. loadprobe's
    /// pages have no scripts, so any is an error: a failed load, a CSP violation, ...
    pub console: Vec<String>,
}

/// Renders `page` in headless Chromium (`chrome`) at 1280×`height`, with profiles in `dir`.
pub fn render(chrome: &Path, page: &Path, height: u32, dir: &Scratch) -> Rendered {
    let url = format!("file://{}", page.display());
    let browse = |extra: &[&str]| -> Output {
        let profile = dir.path(&format!("profile-{}", extra.len()));
        let o = Command::new(chrome)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("chromium runs");
        assert!(o.status.success(), "chromium: {}", stderr(&o));
        o
    };
    let shot = dir.path("page.png");
    let o = browse(&[
        &format!("--window-size=1280,{height}"),
        &format!("--screenshot={}", shot.display()),
    ]);
    let mut console = console_lines(&o);
    let png = std::fs::read(&shot).expect("a screenshot");
    if let Some(keep) = std::env::var_os("LOADPROBE_KEEP_SCREENSHOT") {
        let _ = std::fs::copy(&shot, keep);
    }
    let o = browse(&["--dump-dom"]);
    console.extend(console_lines(&o));
    Rendered {
        png,
        dom: stdout(&o),
        console,
    }
}

fn console_lines(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .map(str::to_string)
        .collect()
}

/// The variance of a PNG's pixel luminance (0..255 scale): about 0 for a blank page, in the
/// hundreds for a page of text and charts on a light background.
pub fn luminance_variance(png: &[u8]) -> f64 {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a PNG of a sane size")];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    let channels = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let lum: Vec<f64> = pixels
        .chunks_exact(channels)
        .map(|p| match channels {
            1 | 2 => f64::from(p[0]),
            _ => 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]),
        })
        .collect();
    let n = lum.len().max(1) as f64;
    let mean = lum.iter().sum::<f64>() / n;
    lum.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n
}

/// The inline `<svg>` elements of a rendered DOM, each from its opening tag to its closing.
pub fn svgs(dom: &str) -> Vec<&str> {
    dom.match_indices("<svg")
        .map(|(start, _)| {
            let end = dom[start..]
                .find("</svg>")
                .map_or(dom.len(), |e| start + e + "</svg>".len());
            &dom[start..end]
        })
        .collect()
}

/// An SVG chart drew its data, not only its frame, axes and legend: a coloured line at least
/// 40 px wide (legend samples are 18 px) or a coloured bar at least 40 px wide (legend swatches
/// are 12 px). plotters draws frames, ticks and text in black and backgrounds in white.
pub fn drawn(svg: &str) -> bool {
    let plain = |c: Option<&str>| {
        c.is_none_or(|c| {
            matches!(
                c.to_ascii_uppercase().as_str(),
                "#000000" | "#FFFFFF" | "NONE" | "BLACK" | "WHITE"
            )
        })
    };
    let lines = elements(svg, "polyline").any(|e| {
        let xs: Vec<f64> = attr(e, "points")
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|p| p.split(',').next()?.parse().ok())
            .collect();
        let span = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
            - xs.iter().copied().fold(f64::INFINITY, f64::min);
        !plain(attr(e, "stroke")) && span >= 40.0
    });
    let bars = elements(svg, "rect").any(|e| {
        !plain(attr(e, "fill"))
            && attr(e, "width").and_then(|w| w.parse::<f64>().ok()) >= Some(40.0)
    });
    lines || bars
}

/// The opening tags `<name ...>` in `svg`.
fn elements<'a>(svg: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> {
    let open = format!("<{name} ");
    svg.match_indices(&open)
        .map(|(i, _)| &svg[i..i + svg[i..].find('>').unwrap_or(svg.len() - i)])
        .collect::<Vec<_>>()
        .into_iter()
}

/// The value of attribute `name` in an opening tag.
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(&tag[start..start + len])
}
