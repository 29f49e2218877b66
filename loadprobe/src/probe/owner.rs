//! Names the [`Owner`] the probe saw for an end: the process id and command as the kernel
//! gave them, the cgroup id as a path with the container and pod it shows.

use std::sync::Arc;

use loadprobe_common::Owner;
use serde::Serialize;

use crate::kernel::cgroup::{Cgroup, Cgroups};

/// An end's owner as a record names it; `null` for what is not known.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Named {
    /// The process (tgid) in loadprobe's PID namespace; `null` for a task outside it.
    pub pid: Option<u32>,
    /// The command name of the thread that made the step (15 bytes at most).
    pub comm: String,
    /// The cgroup v2 path; `null` when it could not be found (removed before it was looked
    /// up, or outside this cgroup namespace's view).
    pub cgroup: Option<String>,
    pub container: Option<String>,
    pub pod: Option<String>,
}

/// Resolves owners, remembering cgroups (see [`Cgroups`]).
#[derive(Debug, Default)]
pub struct Namer {
    cgroups: Cgroups,
}

impl Namer {
    pub fn new(cgroups: Cgroups) -> Namer {
        Namer { cgroups }
    }

    /// Looks up the owner's cgroup now, while it still exists (its process may be about to
    /// exit and its cgroup to be removed); [`Namer::name`] later finds it remembered.
    pub fn learn(&mut self, owner: &Owner) {
        self.cgroups.resolve(owner.cgroup_id);
    }

    pub fn cgroup(&mut self, owner: &Owner) -> Option<Arc<Cgroup>> {
        self.cgroups.resolve(owner.cgroup_id)
    }

    pub fn name(&mut self, owner: &Owner) -> Named {
        let cgroup = self.cgroup(owner);
        Named {
            pid: (owner.pid != 0).then_some(owner.pid),
            comm: comm(owner),
            cgroup: cgroup.as_ref().map(|c| c.path.clone()),
            container: cgroup.as_ref().and_then(|c| c.container.clone()),
            pod: cgroup.as_ref().and_then(|c| c.pod.clone()),
        }
    }
}

/// The owner's command name, up to its first NUL.
pub fn comm(owner: &Owner) -> String {
    let len = owner.comm.iter().position(|&b| b == 0).unwrap_or(16);
    String::from_utf8_lossy(&owner.comm[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_parts_are_null() {
        let mut owner = Owner {
            cgroup_id: u64::MAX,
            pid: 0,
            ..Owner::default()
        };
        owner.comm[..4].copy_from_slice(b"curl");
        let named = Namer::new(Cgroups::at(None, 4)).name(&owner);
        assert_eq!(
            named,
            Named {
                pid: None,
                comm: "curl".into(),
                cgroup: None,
                container: None,
                pod: None
            }
        );
        owner.comm = *b"0123456789abcdef";
        assert_eq!(comm(&owner), "0123456789abcdef");
    }
}
