//! The layer check of `cargo xtask lint`: the top-level modules of `loadprobe/src` use each other
//! only downwards, in the order `docs/architecture.md` writes down, so the crate has no import
//! cycle and a new feature finds one home for each rule.
//!
//! A use is any path that starts at the crate root: `crate::x`, `loadprobe::x` (the binary's
//! `cli` reaching into the library), `crate::{x, y}` and `super::` chains that climb to the root.
//! Comments and string literals are skipped; nothing else of Rust needs to be understood.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The module order: each line of the `layers` block in `docs/architecture.md` is one layer,
/// lowest first; a module may use the modules of lower layers only.
pub struct Layers {
    rank: BTreeMap<String, usize>,
}

impl Layers {
    /// Reads the fenced block that starts with "```layers" in the architecture document.
    pub fn parse(doc: &str) -> Result<Layers> {
        let mut lines = doc.lines().skip_while(|l| l.trim() != "```layers").skip(1);
        let mut rank = BTreeMap::new();
        let mut closed = false;
        for (i, line) in lines.by_ref().enumerate() {
            if line.trim() == "```" {
                closed = true;
                break;
            }
            let names = line.split('#').next().unwrap_or_default();
            for name in names.split_whitespace() {
                if rank.insert(name.to_string(), i).is_some() {
                    bail!("module {name} is in two layers");
                }
            }
        }
        if !closed || rank.is_empty() {
            bail!("no ```layers block");
        }
        Ok(Layers { rank })
    }
}

/// Every `from → to` use between two different top-level modules, with one file that makes it.
pub type Graph = BTreeMap<(String, String), PathBuf>;

/// Reads every `.rs` file under `src` (a crate's source folder).
pub fn graph(src: &Path) -> Result<Graph> {
    let mut graph = Graph::new();
    let mut files = Vec::new();
    rust_files(src, &mut files)?;
    for file in files {
        let rel = file.strip_prefix(src).expect("walked from src");
        let Some(path) = module_path(rel) else {
            continue;
        };
        let text = fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
        for to in uses(&tokens(&text), &path) {
            if to != path[0] {
                graph
                    .entry((path[0].clone(), to))
                    .or_insert_with(|| rel.to_path_buf());
            }
        }
    }
    Ok(graph)
}

/// The problems: uses of a module that is not in a layer, uses upwards or sideways (within one
/// layer), and import cycles. Empty when the tree obeys the layers.
pub fn check(graph: &Graph, layers: &Layers) -> Vec<String> {
    let mut problems = Vec::new();
    let mut modules = BTreeSet::new();
    for ((from, to), file) in graph {
        modules.insert(from.clone());
        modules.insert(to.clone());
        if let (Some(f), Some(t)) = (layers.rank.get(from), layers.rank.get(to))
            && f <= t
        {
            let how = if f == t {
                "in its own layer"
            } else {
                "above it"
            };
            problems.push(format!("{from} uses {to} ({how}) in {}", file.display()));
        }
    }
    for m in &modules {
        if !layers.rank.contains_key(m) {
            problems.push(format!("module {m} is in no layer of docs/architecture.md"));
        }
    }
    problems.extend(
        cycles(graph)
            .into_iter()
            .map(|c| format!("import cycle: {}", c.join(" → "))),
    );
    problems
}

/// One cycle through each strongly connected group of modules, found by depth-first search.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in graph.keys() {
        next.entry(from).or_default().push(to);
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for start in next.keys() {
        let mut stack = vec![*start];
        walk(&next, &mut stack, &mut done, &mut found);
    }
    found
}

fn walk<'a>(
    next: &BTreeMap<&'a str, Vec<&'a str>>,
    stack: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
    found: &mut Vec<Vec<String>>,
) {
    let here = *stack.last().expect("never empty");
    if done.contains(here) {
        return;
    }
    for to in next.get(here).into_iter().flatten() {
        if let Some(i) = stack.iter().position(|m| m == to) {
            let mut cycle: Vec<String> = stack[i..].iter().map(|s| s.to_string()).collect();
            cycle.push(to.to_string());
            found.push(cycle);
        } else {
            stack.push(to);
            walk(next, stack, done, found);
            stack.pop();
        }
    }
    done.insert(here);
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    Ok(())
}

/// The module a file defines, from the crate root: `report/mod.rs` → [report],
/// `report/budget.rs` → [report, budget]. None for the crate roots themselves.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut path: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if path.last().is_some_and(|l| l == "mod") {
        path.pop();
    }
    match path.as_slice() {
        [] => None,
        [root] if root == "lib" || root == "main" => None,
        _ => Some(path),
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Path, // `::`
    Open,
    Close,
    Comma,
    Other,
}

/// Identifiers and the punctuation a path needs; comments, strings and chars are dropped.
fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = |k: usize| chars.get(i + k).copied().unwrap_or('\0');
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && (at(1) == '"' || (at(1) == '#' && matches!(at(2), '"' | '#'))) {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (1..=hashes).all(|h| chars.get(j + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
            out.push(Token::Other);
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push(Token::Other);
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{1F}') or a lifetime ('a), which stays an identifier.
            if at(1) == '\\' {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
            out.push(Token::Other);
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else {
            out.push(match (c, at(1)) {
                (':', ':') => {
                    i += 1;
                    Token::Path
                }
                ('{', _) => Token::Open,
                ('}', _) => Token::Close,
                (',', _) => Token::Comma,
                _ => Token::Other,
            });
            i += 1;
        }
    }
    out
}

/// The top-level modules the tokens of a file in module `path` name through the crate root.
fn uses(tokens: &[Token], path: &[String]) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |i: usize| match tokens.get(i) {
        Some(Token::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    let mut i = 0;
    while i < tokens.len() {
        // A path starts at a root word not itself preceded by `::` (as in `x::crate`, never valid).
        let preceded = i > 0 && tokens[i - 1] == Token::Path;
        let mut j = i;
        let at_root = match ident(i) {
            Some("crate" | "loadprobe") if !preceded => {
                j = i + 1;
                true
            }
            Some("super") if !preceded => {
                // Each `super` climbs one level from the file's own module.
                let mut depth = path.len();
                while ident(j) == Some("super") && tokens.get(j + 1) == Some(&Token::Path) {
                    depth = depth.saturating_sub(1);
                    j += 2;
                }
                // Back onto the last `::` when the chain reaches the root.
                if depth == 0 && j > i {
                    j -= 1;
                    true
                } else {
                    false
                }
            }
            _ => false,
        };
        if at_root && tokens.get(j) == Some(&Token::Path) {
            match tokens.get(j + 1) {
                Some(Token::Ident(name)) => {
                    found.insert(name.clone());
                }
                Some(Token::Open) => {
                    // `crate::{a, b::c, d::{e}}`: the first word of each item at depth one.
                    let mut depth = 0;
                    let mut expect = true;
                    for t in &tokens[j + 1..] {
                        match t {
                            Token::Open => depth += 1,
                            Token::Close => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            Token::Comma if depth == 1 => expect = true,
                            Token::Ident(name) if depth == 1 && expect => {
                                if name != "self" {
                                    found.insert(name.clone());
                                }
                                expect = false;
                            }
                            _ if depth == 1 => expect = false,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        i = j.max(i + 1);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uses_of(text: &str, path: &[&str]) -> Vec<String> {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        uses(&tokens(text), &path).into_iter().collect()
    }

    #[test]
    fn finds_every_way_to_name_a_module() {
        let text = r##"
            use crate::report::Record;
            use crate::{driver::Live, probe, self as me};
            use super::super::kernel::Sysctl;
            use super::sibling;
            fn f() { let _ = loadprobe::format::bytes(1); crate::model::Mode::Close; }
            // use crate::commented::Out;
            /* crate::blocked::Out */
            const S: &str = "crate::quoted::Out";
            const R: &str = r#"crate::raw::Out"#;
            fn g<'a>(c: char) -> bool { c == '"' || c == '{' }
            use crate::charts;
        "##;
        assert_eq!(
            uses_of(text, &["report", "budget"]),
            [
                "charts", "driver", "format", "kernel", "model", "probe", "report"
            ]
        );
        // `super::` from a top-level module's own file is the crate root.
        assert_eq!(uses_of("use super::tune::X;", &["report"]), ["tune"]);
    }

    /// A tiny fake crate in a temporary folder.
    struct Tree(PathBuf);

    impl Tree {
        fn new(files: &[(&str, &str)]) -> Tree {
            let dir = std::env::temp_dir().join(format!(
                "xtask-layers-{}-{}",
                std::process::id(),
                files.len()
            ));
            for (name, text) in files {
                let file = dir.join(name);
                fs::create_dir_all(file.parent().unwrap()).unwrap();
                fs::write(file, text).unwrap();
            }
            Tree(dir)
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const DOC: &str = "# Layers\n```layers\nmodel\nprobe driver # side by side\nreport\n```\n";

    #[test]
    fn a_tree_that_uses_downwards_passes() {
        let tree = Tree::new(&[
            (
                "lib.rs",
                "pub mod model; pub mod probe; pub mod driver; pub mod report;",
            ),
            ("model.rs", "pub enum Mode {}"),
            ("probe/mod.rs", "use crate::model::Mode; mod x;"),
            ("probe/x.rs", "use super::super::model::Mode; use super::Y;"),
            ("driver.rs", "use crate::model::Mode;"),
            ("report/mod.rs", "use crate::{driver, probe::Z};"),
        ]);
        let layers = Layers::parse(DOC).unwrap();
        let problems = check(&graph(&tree.0).unwrap(), &layers);
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_back_edge_a_sideways_use_and_an_unknown_module_fail() {
        let tree = Tree::new(&[
            (
                "lib.rs",
                "pub mod model; pub mod probe; pub mod driver; pub mod report;",
            ),
            ("model.rs", "use crate::report::Record;"),
            ("probe/mod.rs", "use crate::driver::Live;"),
            ("driver.rs", "use crate::model::Mode;"),
            ("report/mod.rs", "use crate::{model, stray};"),
        ]);
        let layers = Layers::parse(DOC).unwrap();
        let problems = check(&graph(&tree.0).unwrap(), &layers);
        assert_eq!(
            problems,
            [
                "model uses report (above it) in model.rs",
                "probe uses driver (in its own layer) in probe/mod.rs",
                "module stray is in no layer of docs/architecture.md",
                "import cycle: model → report → model",
            ]
        );
    }

    #[test]
    fn a_layers_block_is_required() {
        assert!(Layers::parse("no block").is_err());
        assert!(Layers::parse("```layers\na\na\n```").is_err());
    }

    #[test]
    fn loadprobe_obeys_its_layers() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let doc = fs::read_to_string(root.join("docs/architecture.md")).unwrap();
        let layers = Layers::parse(&doc).unwrap();
        let problems = check(&graph(&root.join("loadprobe/src")).unwrap(), &layers);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
