//! `cargo xtask install|uninstall [--prefix DIR]`: the release binary, its man pages and its
//! shell completions under a prefix, and a manifest of exactly what was put there so that
//! uninstall removes that and nothing else.
//!
//! The man pages and completions come from the binary itself (`loadprobe generate`), so they
//! describe the very binary installed beside them.

use anyhow::{Context, Result, bail};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the manifest lives, relative to the prefix.
const MANIFEST: &str = "share/loadprobe/install-manifest";

/// Where each generated completion file goes, relative to the prefix: the folders bash-completion,
/// zsh (its site-functions in `fpath`) and fish (vendor completions) search under their own
/// prefix.
const COMPLETIONS: &[(&str, &str)] = &[
    (
        "loadprobe.bash",
        "share/bash-completion/completions/loadprobe",
    ),
    ("_loadprobe", "share/zsh/site-functions/_loadprobe"),
    (
        "loadprobe.fish",
        "share/fish/vendor_completions.d/loadprobe.fish",
    ),
];

const MAN_DIR: &str = "share/man/man1";

#[derive(clap::Args)]
pub struct PrefixArgs {
    /// Installation prefix: the binary goes into PREFIX/bin, man pages into
    /// PREFIX/share/man/man1.
    #[arg(long, value_name = "DIR", default_value = "/usr/local")]
    prefix: PathBuf,
}

impl PrefixArgs {
    /// The prefix as an absolute path (a relative one is taken from the current directory).
    fn prefix(&self) -> Result<PathBuf> {
        Ok(std::env::current_dir()?.join(&self.prefix))
    }
}

/// What install put under a prefix, relative to it: files, and the folders it had to create.
#[derive(Default, Debug, PartialEq)]
struct Manifest {
    files: BTreeSet<PathBuf>,
    dirs: BTreeSet<PathBuf>,
}

impl Manifest {
    fn read(prefix: &Path) -> Result<Option<Manifest>> {
        let path = prefix.join(MANIFEST);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut manifest = Manifest::default();
        for line in text.lines() {
            let (kind, rel) = line.split_once(' ').unwrap_or((line, ""));
            let rel = PathBuf::from(rel);
            // Only plain relative paths: a damaged manifest must not reach outside the prefix.
            if rel.as_os_str().is_empty()
                || !rel
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
            {
                bail!("{}: bad line {line:?}", path.display());
            }
            match kind {
                "file" => manifest.files.insert(rel),
                "dir" => manifest.dirs.insert(rel),
                _ => bail!("{}: bad line {line:?}", path.display()),
            };
        }
        Ok(Some(manifest))
    }

    fn write(&self, prefix: &Path) -> Result<()> {
        let mut text = String::new();
        for (kind, set) in [("dir", &self.dirs), ("file", &self.files)] {
            for rel in set {
                text.push_str(&format!("{kind} {}\n", rel.display()));
            }
        }
        write_file(&prefix.join(MANIFEST), text.as_bytes(), 0o644)
    }
}

/// Builds the release binary, then installs it under the prefix.
pub fn install(root: &Path, args: &PrefixArgs) -> Result<()> {
    crate::status(Command::new("cargo").args(["build", "--release", "-p", "loadprobe"]))?;
    let bin = crate::target_dir(root)?.join("release/loadprobe");
    let prefix = args.prefix()?;
    let installed = install_binary(&bin, &prefix, &root.join("target/xtask-install"))?;
    for rel in &installed.files {
        println!("install: {}", prefix.join(rel).display());
    }
    Ok(())
}

/// Installs `bin`, its man pages and completions under `prefix`, generating them in `staging`
/// (emptied first, removed after). Installing again replaces the files and removes those the
/// previous install had and this one has not.
fn install_binary(bin: &Path, prefix: &Path, staging: &Path) -> Result<Manifest> {
    let previous = Manifest::read(prefix)?.unwrap_or_default();
    let _ = std::fs::remove_dir_all(staging);
    let generated = generate(bin, staging);
    let _ = std::fs::remove_dir_all(staging);
    let mut files = vec![(std::fs::read(bin)?, PathBuf::from("bin/loadprobe"), 0o755)];
    files.extend(generated?);

    let mut manifest = Manifest {
        dirs: previous.dirs.clone(),
        ..Manifest::default()
    };
    let paths = files.iter().map(|(_, rel, _)| rel.as_path());
    for rel in paths.chain([Path::new(MANIFEST)]) {
        for dir in rel.ancestors().skip(1) {
            if !dir.as_os_str().is_empty() && !prefix.join(dir).is_dir() {
                manifest.dirs.insert(dir.to_path_buf());
            }
        }
    }
    for (bytes, rel, mode) in &files {
        write_file(&prefix.join(rel), bytes, *mode)?;
        manifest.files.insert(rel.clone());
    }
    for stale in previous.files.difference(&manifest.files) {
        remove_file(&prefix.join(stale))?;
    }
    manifest.write(prefix)?;
    Ok(manifest)
}

/// Runs `bin generate` into `staging`; returns each file's contents, place and mode.
fn generate(bin: &Path, staging: &Path) -> Result<Vec<(Vec<u8>, PathBuf, u32)>> {
    let mut files = Vec::new();
    for what in ["man", "completions"] {
        let dir = staging.join(what);
        crate::status(Command::new(bin).args(["generate", what]).arg(&dir))?;
        let mut names: Vec<_> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for name in names {
            let text = std::fs::read(dir.join(&name))?;
            let name = name.to_string_lossy();
            let rel = if what == "man" {
                Path::new(MAN_DIR).join(&*name)
            } else {
                let (_, place) = COMPLETIONS
                    .iter()
                    .find(|(generated, _)| *generated == name)
                    .with_context(|| format!("no place for generated completion file {name}"))?;
                PathBuf::from(place)
            };
            files.push((text, rel, 0o644));
        }
    }
    Ok(files)
}

/// Removes what the manifest under the prefix lists, then the manifest and the folders install
/// created, when they are empty.
pub fn uninstall(args: &PrefixArgs) -> Result<()> {
    let prefix = args.prefix()?;
    if uninstall_from(&prefix)? {
        println!("uninstall: removed loadprobe from {}", prefix.display());
    } else {
        println!("uninstall: nothing installed under {}", prefix.display());
    }
    Ok(())
}

/// False when there was no manifest (nothing to remove).
fn uninstall_from(prefix: &Path) -> Result<bool> {
    let Some(manifest) = Manifest::read(prefix)? else {
        return Ok(false);
    };
    for rel in manifest.files.iter().map(PathBuf::as_path) {
        remove_file(&prefix.join(rel))?;
    }
    remove_file(&prefix.join(MANIFEST))?;
    // Deepest first, so a folder's subfolders are gone before it; one that holds files of
    // someone else's stays.
    let mut dirs: Vec<_> = manifest.dirs.iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for dir in dirs {
        let _ = std::fs::remove_dir(prefix.join(dir));
    }
    Ok(true)
}

/// Writes through a temporary file and a rename: a running binary is replaced, not rewritten
/// (which fails with ETXTBSY), and a reader never sees half a file.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().context("a file inside the prefix")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().context("a file name")?.to_string_lossy()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadprobe_tests::loadprobe_bin;

    /// A temporary folder, removed on drop (also when the test fails).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            TempDir(loadprobe_tests::tempdir(tag))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Every file under `dir`, relative to it, with its contents.
    fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for entry in std::fs::read_dir(&d).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    todo.push(path);
                } else {
                    let bytes = std::fs::read(&path).expect("read");
                    out.push((path.strip_prefix(dir).unwrap().to_path_buf(), bytes));
                }
            }
        }
        out.sort();
        out
    }

    /// The subcommands `loadprobe --help` lists (its `Commands:` section, without `help`).
    fn subcommands(bin: &Path) -> Vec<String> {
        let out = Command::new(bin).arg("--help").output().expect("--help");
        let help = String::from_utf8(out.stdout).expect("utf-8");
        help.lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|&c| c != "help")
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn install_puts_exactly_its_files_and_uninstall_removes_them() {
        let bin = loadprobe_bin();
        let tmp = TempDir::new("install");
        let prefix = tmp.0.join("prefix");
        let staging = tmp.0.join("staging");
        std::fs::create_dir(&prefix).unwrap();

        let manifest = install_binary(&bin, &prefix, &staging).expect("install");
        assert!(!staging.exists(), "staging folder left behind");
        let installed = tree(&prefix);
        let names: Vec<_> = installed.iter().map(|(p, _)| p.clone()).collect();

        let commands = subcommands(&bin);
        assert!(commands.len() >= 6, "subcommands from --help: {commands:?}");
        let mut expected: Vec<PathBuf> = ["bin/loadprobe", MANIFEST]
            .into_iter()
            .chain(COMPLETIONS.iter().map(|(_, place)| *place))
            .map(PathBuf::from)
            .collect();
        let man: Vec<_> = names.iter().filter(|p| p.starts_with(MAN_DIR)).collect();
        expected.extend(man.iter().map(|p| p.to_path_buf()));
        expected.sort();
        assert_eq!(names, expected, "installed files");
        let mut listed: Vec<_> = manifest.files.iter().cloned().collect();
        listed.push(PathBuf::from(MANIFEST));
        listed.sort();
        assert_eq!(listed, names, "the manifest lists every installed file");

        // The man pages and completions know every subcommand --help lists.
        let page = |name: &str| {
            let path = prefix.join(MAN_DIR).join(name);
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let main_page = page("loadprobe.1");
        for command in &commands {
            // roff writes a hyphen as `\-` (find-limit is `find\-limit` in the page).
            let roff = command.replace('-', "\\-");
            assert!(main_page.contains(&roff), "loadprobe.1 lacks {command}");
            let own = page(&format!("loadprobe-{command}.1"));
            assert!(own.contains(&roff), "loadprobe-{command}.1");
        }
        assert!(
            !main_page.contains("generate"),
            "the hidden subcommand is documented"
        );
        for (_, place) in COMPLETIONS {
            let text = std::fs::read_to_string(prefix.join(place)).unwrap();
            for command in &commands {
                assert!(text.contains(command.as_str()), "{place} lacks {command}");
            }
        }

        // The installed binary runs.
        let out = Command::new(prefix.join("bin/loadprobe"))
            .arg("--version")
            .output()
            .expect("installed binary runs");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("loadprobe "));

        // Idempotent: a second install leaves the same files with the same contents.
        install_binary(&bin, &prefix, &staging).expect("install again");
        assert_eq!(
            tree(&prefix),
            installed,
            "a second install changed the tree"
        );

        assert!(uninstall_from(&prefix).expect("uninstall"));
        let left: Vec<_> = std::fs::read_dir(&prefix).unwrap().collect();
        assert!(left.is_empty(), "uninstall left {left:?}");
        assert!(!uninstall_from(&prefix).expect("uninstall again"));
    }

    #[test]
    fn uninstall_keeps_what_it_did_not_install() {
        let bin = loadprobe_bin();
        let tmp = TempDir::new("install-keep");
        let prefix = tmp.0.join("prefix");
        let theirs = prefix.join(MAN_DIR).join("other.1");
        write_file(&theirs, b"someone else's page", 0o644).unwrap();

        install_binary(&bin, &prefix, &tmp.0.join("staging")).expect("install");
        // A file a previous version installed and this one does not is removed on reinstall.
        let mut manifest = Manifest::read(&prefix).unwrap().expect("manifest");
        let stale = PathBuf::from(MAN_DIR).join("loadprobe-gone.1");
        write_file(&prefix.join(&stale), b"old", 0o644).unwrap();
        manifest.files.insert(stale.clone());
        manifest.write(&prefix).unwrap();
        install_binary(&bin, &prefix, &tmp.0.join("staging")).expect("reinstall");
        assert!(!prefix.join(&stale).exists(), "stale page kept");

        assert!(uninstall_from(&prefix).expect("uninstall"));
        let left: Vec<_> = tree(&prefix).into_iter().map(|(p, _)| p).collect();
        assert_eq!(left, [PathBuf::from(MAN_DIR).join("other.1")]);
    }

    #[test]
    fn a_manifest_cannot_reach_outside_the_prefix() {
        let tmp = TempDir::new("install-bad");
        write_file(&tmp.0.join(MANIFEST), b"file ../../etc/passwd\n", 0o644).unwrap();
        let err = uninstall_from(&tmp.0).unwrap_err().to_string();
        assert!(err.contains("bad line"), "{err}");
    }
}
