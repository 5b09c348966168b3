//! Build flags the multi-platform path does not handle yet: refused by name rather than
//! silently ignored.

use crate::build::BuildArgs;
use anyhow::{bail, Result};

pub fn refuse_unsupported(args: &BuildArgs) -> Result<()> {
    let unsupported = [
        ("--cache-to", !args.cache_to.is_empty()),
        ("--cache-from", !args.cache_from.is_empty()),
        ("--metadata-file", args.metadata_file.is_some()),
        ("--check", args.check),
    ];
    if let Some((flag, _)) = unsupported.iter().find(|(_, given)| *given) {
        bail!("{flag} is not supported with more than one --platform yet; build each platform separately");
    }
    Ok(())
}
