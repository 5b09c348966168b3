//! Resource limits by docker's names (`--ulimit nofile=1024:2048`).

use anyhow::{bail, Context, Result};
use rustix::process::{Resource, Rlimit as RawLimit};

use crate::Rlimit;

/// Docker's ulimit names and the resources they set.
const RESOURCES: [(&str, Resource); 15] = [
    ("core", Resource::Core),
    ("cpu", Resource::Cpu),
    ("data", Resource::Data),
    ("fsize", Resource::Fsize),
    ("locks", Resource::Locks),
    ("memlock", Resource::Memlock),
    ("msgqueue", Resource::Msgqueue),
    ("nice", Resource::Nice),
    ("nofile", Resource::Nofile),
    ("nproc", Resource::Nproc),
    ("rss", Resource::Rss),
    ("rtprio", Resource::Rtprio),
    ("rttime", Resource::Rttime),
    ("sigpending", Resource::Sigpending),
    ("stack", Resource::Stack),
];

/// Sets each limit on the calling process (inherited by what it execs).
pub(crate) fn apply(limits: &[Rlimit]) -> Result<()> {
    for limit in limits {
        let Some((_, resource)) = RESOURCES.iter().find(|(n, _)| *n == limit.name) else {
            bail!("unknown ulimit {:?}", limit.name);
        };
        let value = |v: i64| u64::try_from(v).ok();
        let raw = RawLimit {
            current: value(limit.soft),
            maximum: value(limit.hard),
        };
        rustix::process::setrlimit(*resource, raw).with_context(|| {
            format!(
                "setting ulimit {}={}:{}",
                limit.name, limit.soft, limit.hard
            )
        })?;
    }
    Ok(())
}
