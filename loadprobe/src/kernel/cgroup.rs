//! cgroup v2 ids to paths, and the container or Kubernetes pod a path shows.
//!
//! The probe names a task's cgroup by its id (`bpf_get_current_cgroup_id()`), which is the
//! inode of the cgroup's directory in the cgroup2 filesystem (kernfs). No syscall maps an id
//! back to a path for an unprivileged process, so [`Cgroups`] walks the mount and remembers
//! what it found: bounded, because a node's cgroups come and go for as long as a trace runs.
//!
//! The mount is opened once, while the process may still be privileged, and walked through
//! that descriptor (`openat`) from then on. Where `/sys/fs/cgroup` holds no cgroup2 (`ip netns
//! exec` gives its command a fresh `/sys` without the cgroup mounts), a cgroup2 filesystem is
//! mounted detached (`fsopen`/`fsmount`, with CAP_SYS_ADMIN): a descriptor to walk, in no
//! mount namespace, so nothing on the system changes.

use std::collections::{HashMap, VecDeque};
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

/// Where cgroup2 is mounted: on its own (unified), or beside v1 controllers (hybrid).
const MOUNTS: &[&str] = &["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
/// `CGROUP2_SUPER_MAGIC`.
const CGROUP2_MAGIC: i64 = 0x6367_7270;
/// Ids remembered at once (found and not found), oldest first out.
pub const MAX_CGROUPS: usize = 16_384;
/// Directories one walk visits at most: a node has hundreds to a few thousand.
const MAX_WALK: usize = 65_536;

/// A cgroup as a record names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Cgroup {
    /// The path under the cgroup2 mount, `/` for the root: `/system.slice/nginx.service`.
    pub path: String,
    /// The container id the path shows (docker, containerd, CRI-O), if it shows one.
    pub container: Option<String>,
    /// The Kubernetes pod uid the path shows, if it shows one.
    pub pod: Option<String>,
}

/// Cgroup ids resolved so far, `None` for ids the mount did not hold when looked for (a cgroup
/// removed before its first event was read, or one outside this cgroup namespace's view).
/// cgroup2 ids are 64-bit and never reused while the system runs, so an entry stays true:
/// a TIME_WAIT socket whose cgroup is gone is still named by the path it had.
#[derive(Debug)]
pub struct Cgroups {
    mount: Option<OwnedFd>,
    known: HashMap<u64, Option<Arc<Cgroup>>>,
    order: VecDeque<u64>,
    capacity: usize,
}

impl Default for Cgroups {
    fn default() -> Cgroups {
        Cgroups::new()
    }
}

impl Cgroups {
    /// Resolves against the system's cgroup2 mount, opened now (none: every id is unknown).
    pub fn new() -> Cgroups {
        let mount = MOUNTS
            .iter()
            .filter_map(|m| open_dir(None, m))
            .find(is_cgroup2)
            .or_else(detached_mount);
        Cgroups::at(mount, MAX_CGROUPS)
    }

    /// Resolves against the tree at `mount`, remembering at most `capacity` ids.
    pub fn at(mount: Option<OwnedFd>, capacity: usize) -> Cgroups {
        Cgroups {
            mount,
            known: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// The cgroup of id `id`, walking the mount once if it is not known yet.
    pub fn resolve(&mut self, id: u64) -> Option<Arc<Cgroup>> {
        if let Some(known) = self.known.get(&id) {
            return known.clone();
        }
        let mount = self.mount.as_ref()?;
        for (ino, path) in walk(mount) {
            if !self.known.contains_key(&ino) {
                self.remember(ino, Some(Arc::new(Cgroup::at(path))));
            }
        }
        if !self.known.contains_key(&id) {
            self.remember(id, None);
        }
        self.known.get(&id).cloned().flatten()
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    fn remember(&mut self, id: u64, cgroup: Option<Arc<Cgroup>>) {
        while self.known.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.known.remove(&oldest);
        }
        self.known.insert(id, cgroup);
        self.order.push_back(id);
    }
}

impl Cgroup {
    /// The cgroup at `path` (under the mount), with the container and pod it shows.
    pub fn at(path: String) -> Cgroup {
        let (container, pod) = container_and_pod(&path);
        Cgroup {
            path,
            container,
            pod,
        }
    }
}

/// Opens the directory `path`, relative to `dir` when given.
fn open_dir(dir: Option<&OwnedFd>, path: &str) -> Option<OwnedFd> {
    let c = CString::new(path).ok()?;
    let at = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: `c` is NUL-terminated; `at` is a directory descriptor we own or AT_FDCWD.
    let fd = unsafe { libc::openat(at, c.as_ptr(), flags) };
    // SAFETY: a descriptor `openat` just returned is ours alone.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A cgroup2 filesystem mounted nowhere: its root as a descriptor. Its root is this process's
/// cgroup namespace's, as `/sys/fs/cgroup` would show it.
fn detached_mount() -> Option<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: libc::c_uint = 1;
    // SAFETY: fsopen takes a NUL-terminated filesystem name and flags, returns a new descriptor.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, c"cgroup2".as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return None;
    }
    // SAFETY: a descriptor fsopen just returned is ours alone.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as i32) };
    let null = std::ptr::null::<libc::c_char>();
    // SAFETY: FSCONFIG_CMD_CREATE takes no key, value or aux; the descriptor is open.
    let created = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            null,
            null,
            0,
        )
    };
    if created < 0 {
        return None;
    }
    // SAFETY: fsmount of a created filesystem context returns a new descriptor of its root.
    let mnt = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_RDONLY,
        )
    };
    if mnt < 0 {
        return None;
    }
    // SAFETY: as for fsopen's.
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as i32) };
    // fsmount's descriptor is an `O_PATH` one, which cannot be listed: open the root through it.
    open_dir(Some(&mnt), ".")
}

fn is_cgroup2(dir: &OwnedFd) -> bool {
    // SAFETY: `statfs` is plain C data, all zeroes valid.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most one `statfs` into `fs`; the descriptor is open.
    let rc = unsafe { libc::fstatfs(dir.as_raw_fd(), &mut fs) };
    rc == 0 && fs.f_type as i64 == CGROUP2_MAGIC
}

/// The subdirectories of `dir` as (inode, name), from the listing itself (`d_ino`: kernfs's
/// id; no stat per cgroup).
fn subdirs(dir: &OwnedFd) -> Vec<(u64, String)> {
    let mut found = Vec::new();
    // SAFETY: `dup` of a descriptor we own; `fdopendir` takes the copy over (closedir closes
    // it), or fails and leaves it to us.
    let copy = unsafe { libc::dup(dir.as_raw_fd()) };
    if copy < 0 {
        return found;
    }
    // SAFETY: as above.
    let stream = unsafe { libc::fdopendir(copy) };
    if stream.is_null() {
        // SAFETY: fdopendir failed, so the copy is still ours to close.
        unsafe { libc::close(copy) };
        return found;
    }
    loop {
        // SAFETY: `stream` is an open directory stream; the entry it returns stays valid until
        // the next readdir on it, and is copied out before that.
        let entry = unsafe { libc::readdir(stream) };
        if entry.is_null() {
            break;
        }
        // SAFETY: a non-null entry from readdir, with a NUL-terminated name.
        let (ino, kind, name) = unsafe {
            let e = &*entry;
            (e.d_ino, e.d_type, CStr::from_ptr(e.d_name.as_ptr()))
        };
        let name = name.to_string_lossy();
        if kind == libc::DT_DIR && name != "." && name != ".." {
            found.push((ino, name.into_owned()));
        }
    }
    // SAFETY: `stream` is open and closed once, here.
    unsafe { libc::closedir(stream) };
    found
}

/// Every cgroup directory under the mount `root` as (inode, path under the mount), the root as
/// `/`.
fn walk(root: &OwnedFd) -> Vec<(u64, String)> {
    let mut found = Vec::new();
    // SAFETY: `stat` is plain C data, all zeroes valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most one `stat` into `st`; the descriptor is open.
    if unsafe { libc::fstat(root.as_raw_fd(), &mut st) } == 0 {
        found.push((st.st_ino, "/".to_string()));
    }
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let dir = if rel.is_empty() {
            root.try_clone().ok()
        } else {
            open_dir(Some(root), rel.trim_start_matches('/'))
        };
        let Some(dir) = dir else {
            continue;
        };
        for (ino, name) in subdirs(&dir) {
            if found.len() >= MAX_WALK {
                return found;
            }
            let path = format!("{rel}/{name}");
            found.push((ino, path.clone()));
            todo.push(path);
        }
    }
    found
}

/// The container id and Kubernetes pod uid a cgroup path shows, as the usual runtimes and
/// cgroup drivers name them; `None` where the path shows none (never a guess from a part that
/// only looks like one: an id is 64 hex digits, a uid is a UUID).
///
/// * systemd driver: `…/kubepods-burstable-pod<uid>.slice/cri-containerd-<id>.scope` (the
///   uid's `-` escaped as `_`), `docker-<id>.scope`, `crio-<id>.scope`;
/// * cgroupfs driver: `/kubepods/burstable/pod<uid>/<id>`, `/docker/<id>`.
pub fn container_and_pod(path: &str) -> (Option<String>, Option<String>) {
    let (mut container, mut pod) = (None, None);
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if let Some(slice) = part.strip_suffix(".slice") {
            if let Some(at) = slice.rfind("-pod") {
                let uid = slice[at + 4..].replace('_', "-");
                if is_uuid(&uid) {
                    pod = Some(uid);
                }
            }
        } else if let Some(scope) = part.strip_suffix(".scope") {
            for runtime in ["docker-", "cri-containerd-", "crio-"] {
                if let Some(id) = scope.strip_prefix(runtime)
                    && is_container_id(id)
                {
                    container = Some(id.to_string());
                }
            }
        } else if let Some(uid) = part.strip_prefix("pod")
            && is_uuid(uid)
        {
            pod = Some(uid.to_string());
        } else if is_container_id(part) {
            container = Some(part.to_string());
        }
    }
    (container, pod)
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f3c5e1ad0b2c7e9f8a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4";
    const UID: &str = "6b1d3b0e-2c4f-4a8e-9d1c-7f5e3a2b1c0d";

    #[test]
    fn runtimes_and_drivers_show_containers_and_pods() {
        let esc = UID.replace('-', "_");
        let cases = [
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{esc}.slice/cri-containerd-{ID}.scope"
                ),
                Some(ID),
                Some(UID),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{esc}.slice/crio-{ID}.scope"),
                Some(ID),
                Some(UID),
            ),
            (format!("/system.slice/docker-{ID}.scope"), Some(ID), None),
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                Some(ID),
                Some(UID),
            ),
            (format!("/docker/{ID}"), Some(ID), None),
            // conmon is CRI-O's monitor, not the container.
            (format!("/system.slice/crio-conmon-{ID}.scope"), None, None),
            (
                "/user.slice/user-0.slice/session-3.scope".to_string(),
                None,
                None,
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice".to_string(),
                None,
                None,
            ),
            ("/".to_string(), None, None),
            // Almost an id, almost a uid: neither.
            (format!("/docker-{}.scope", &ID[1..]), None, None),
            (format!("/kubepods-pod{}.slice", &esc[1..]), None, None),
        ];
        for (path, container, pod) in cases {
            let (c, p) = container_and_pod(&path);
            assert_eq!((c.as_deref(), p.as_deref()), (container, pod), "{path}");
        }
    }

    /// The real mount: the root is `/` and this process's own cgroup resolves to the path
    /// /proc/self/cgroup names.
    #[test]
    fn resolves_this_process_cgroup_by_its_inode() {
        use std::os::unix::fs::MetadataExt;
        let mut cgroups = Cgroups::new();
        let Some(mount) = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .find(|m| open_dir(None, m).is_some_and(|d| is_cgroup2(&d)))
        else {
            eprintln!("skip: no cgroup2 mount");
            return;
        };
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
            return;
        };
        let dir = std::path::Path::new(mount).join(path.trim_start_matches('/'));
        let Ok(meta) = std::fs::metadata(&dir) else {
            return; // another cgroup namespace's view
        };
        assert_eq!(cgroups.resolve(meta.ino()).unwrap().path, path);
        let root = std::fs::metadata(mount).unwrap().ino();
        assert_eq!(cgroups.resolve(root).unwrap().path, "/");
        assert_eq!(cgroups.resolve(u64::MAX), None);
    }

    #[test]
    fn memory_is_bounded_oldest_out() {
        let dir = std::env::temp_dir().join(format!("lp-cgroups-{}", std::process::id()));
        for i in 0..10 {
            std::fs::create_dir_all(dir.join(format!("c{i}"))).unwrap();
        }
        let mut cgroups = Cgroups::at(open_dir(None, dir.to_str().unwrap()), 4);
        // A walk finds 11 directories: only the 4 newest stay, then the unknown id.
        assert_eq!(cgroups.resolve(u64::MAX), None);
        assert_eq!(cgroups.len(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A cgroup made now is found through a detached cgroup2 mount, as through the mount.
    #[test]
    fn a_detached_mount_finds_a_new_cgroup() {
        use std::os::unix::fs::MetadataExt;
        let Some(mount) = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .find(|m| open_dir(None, m).is_some_and(|d| is_cgroup2(&d)))
        else {
            return;
        };
        let Some(detached) = detached_mount() else {
            eprintln!("skip: no CAP_SYS_ADMIN");
            return;
        };
        let name = format!("lp-detached-{}", std::process::id());
        let dir = std::path::Path::new(mount).join(&name);
        std::fs::create_dir(&dir).unwrap();
        let ino = std::fs::metadata(&dir).unwrap().ino();
        let mut cgroups = Cgroups::at(Some(detached), 64);
        let found = cgroups.resolve(ino);
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(found.map(|c| c.path.clone()), Some(format!("/{name}")));
    }
}
