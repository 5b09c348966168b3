//! Foreign-architecture programs run through binfmt_misc (qemu-user-static); when the
//! kernel refuses one (ENOEXEC), say which architecture it is and what to install.

use std::io::Read;
use std::path::Path;

/// The architecture of an ELF file, from `e_machine` (None if not ELF or unknown).
fn elf_architecture(header: &[u8]) -> Option<&'static str> {
    if header.len() < 20 || &header[..4] != b"\x7fELF" {
        return None;
    }
    let machine = match header[5] {
        1 => u16::from_le_bytes([header[18], header[19]]),
        2 => u16::from_be_bytes([header[18], header[19]]),
        _ => return None,
    };
    Some(match machine {
        3 => "i386",
        8 => "mips",
        20 => "ppc",
        21 => "ppc64",
        22 => "s390x",
        40 => "arm",
        62 => "x86_64",
        183 => "aarch64",
        243 => "riscv64",
        258 => "loongarch64",
        _ => return None,
    })
}

/// Text appended to an ENOEXEC error for `program`, naming its architecture and the fix.
pub(crate) fn enoexec_hint(program: &Path) -> String {
    let mut header = [0u8; 20];
    let read = std::fs::File::open(program).and_then(|mut f| f.read_exact(&mut header));
    match read.ok().and_then(|_| elf_architecture(&header)) {
        Some(arch) if arch != std::env::consts::ARCH => format!(
            " ({} is built for {arch} and no binfmt_misc handler runs it here; install \
             qemu-user-static and register qemu-{arch} with the F flag, see scripts/install-deps.sh)",
            program.display()
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_machine_of_elf_headers() {
        let mut aarch64 = [0u8; 20];
        aarch64[..6].copy_from_slice(b"\x7fELF\x02\x01");
        aarch64[18] = 183;
        assert_eq!(elf_architecture(&aarch64), Some("aarch64"));
        let mut s390x = [0u8; 20];
        s390x[..6].copy_from_slice(b"\x7fELF\x02\x02");
        s390x[19] = 22;
        assert_eq!(elf_architecture(&s390x), Some("s390x"));
        assert_eq!(elf_architecture(b"#!/bin/sh\n echo hello there"), None);
    }

    #[test]
    fn hint_names_the_foreign_architecture_only() {
        assert_eq!(enoexec_hint(Path::new("/proc/self/exe")), "");
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("prog");
        let mut header = vec![0u8; 64];
        header[..6].copy_from_slice(b"\x7fELF\x02\x01");
        header[18] = if std::env::consts::ARCH == "aarch64" {
            62
        } else {
            183
        };
        std::fs::write(&foreign, header).unwrap();
        assert!(enoexec_hint(&foreign).contains("binfmt_misc"));
    }
}
