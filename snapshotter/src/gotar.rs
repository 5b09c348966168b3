//! Tar header blocks laid out byte for byte as Go's archive/tar writes them for
//! BuildKit's layers (containerd's change writer asks for PAX and Go falls back to
//! plain USTAR whenever that can hold the entry), so equal trees give equal diff ids.

/// The fields of one entry.
pub(crate) struct Fields<'a> {
    pub name: &'a [u8],
    pub link: &'a [u8],
    pub mode: u64,
    pub uid: u64,
    pub gid: u64,
    pub size: u64,
    pub mtime: u64,
    pub typeflag: u8,
    pub dev_major: u64,
    pub dev_minor: u64,
}

const NAME: std::ops::Range<usize> = 0..100;
const MODE: std::ops::Range<usize> = 100..108;
const UID: std::ops::Range<usize> = 108..116;
const GID: std::ops::Range<usize> = 116..124;
const SIZE: std::ops::Range<usize> = 124..136;
const MTIME: std::ops::Range<usize> = 136..148;
const CHKSUM: std::ops::Range<usize> = 148..156;
const TYPEFLAG: usize = 156;
const LINKNAME: std::ops::Range<usize> = 157..257;
const MAGIC: std::ops::Range<usize> = 257..265;
const DEVMAJOR: std::ops::Range<usize> = 329..337;
const DEVMINOR: std::ops::Range<usize> = 337..345;
const PREFIX: std::ops::Range<usize> = 345..500;

/// Go's formatOctal: zero-padded digits and a NUL; a value that does not fit becomes 0.
fn octal(field: &mut [u8], value: u64) {
    let mut digits = format!("{value:o}");
    if digits.len() > field.len() - 1 {
        digits = "0".into();
    }
    let last = field.len() - 1;
    let pad = last - digits.len();
    field[..pad].fill(b'0');
    field[pad..last].copy_from_slice(digits.as_bytes());
    field[last] = 0;
}

/// Go's formatString: as much as fits, NUL-terminated when shorter.
fn string(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    if n < field.len() {
        field[n] = 0;
    }
}

fn fits_octal(field_len: usize, value: u64) -> bool {
    value < 1u64 << (3 * (field_len - 1))
}

/// Go's toASCII: non-ASCII (and NUL) bytes dropped, for best-effort header names.
fn to_ascii(s: &[u8]) -> Vec<u8> {
    std::str::from_utf8(s)
        .map(|t| {
            t.chars()
                .filter(|c| c.is_ascii() && *c != '\0')
                .map(|c| c as u8)
                .collect()
        })
        .unwrap_or_else(|_| {
            s.iter()
                .copied()
                .filter(|b| b.is_ascii() && *b != 0)
                .collect()
        })
}

/// Go's splitUSTARPath: (prefix, name) when a long ASCII path fits the two fields.
fn split_ustar(name: &[u8]) -> Option<(&[u8], &[u8])> {
    if name.len() <= NAME.len() || !name.is_ascii() {
        return None;
    }
    let mut length = name.len();
    if length > PREFIX.len() + 1 {
        length = PREFIX.len() + 1;
    } else if name[length - 1] == b'/' {
        length -= 1;
    }
    let i = name[..length].iter().rposition(|b| *b == b'/')?;
    let suffix_len = name.len() - i - 1;
    if i == 0 || suffix_len > NAME.len() || suffix_len == 0 || i > PREFIX.len() {
        return None;
    }
    Some((&name[..i], &name[i + 1..]))
}

fn set_checksum(block: &mut [u8; 512]) {
    block[CHKSUM].fill(b' ');
    let sum: u64 = block.iter().map(|b| *b as u64).sum();
    octal(&mut block[CHKSUM.start..CHKSUM.end - 1], sum);
    block[CHKSUM.end - 1] = b' ';
}

fn set_magic(block: &mut [u8; 512]) {
    block[MAGIC].copy_from_slice(b"ustar\x0000");
}

/// Go's formatPAXRecord.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut size = base + base.to_string().len();
    if (base + size.to_string().len()) != size {
        size = base + size.to_string().len();
    }
    let mut out = format!("{size} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// The header blocks for one entry: a PAX extended header (block plus padded records)
/// when USTAR cannot hold it, then the entry's own block. `extra` are PAX records the
/// entry needs in any case (uid/gid beyond USTAR, xattrs).
pub(crate) fn header_blocks(f: &Fields, extra: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut records: Vec<(String, Vec<u8>)> = extra.to_vec();
    let name_needs_pax = !f.name.is_ascii() || f.name.len() > NAME.len();
    let link_needs_pax = !f.link.is_ascii() || f.link.len() > LINKNAME.len();
    if name_needs_pax {
        records.push(("path".into(), f.name.to_vec()));
    }
    if link_needs_pax {
        records.push(("linkpath".into(), f.link.to_vec()));
    }
    if !fits_octal(SIZE.len(), f.size) {
        records.push(("size".into(), f.size.to_string().into_bytes()));
    }
    let split = split_ustar(f.name);
    let ustar_ok = extra.is_empty()
        && (!name_needs_pax || split.is_some())
        && !link_needs_pax
        && fits_octal(SIZE.len(), f.size);

    let mut out = Vec::new();
    let mut block = [0u8; 512];
    if ustar_ok {
        let (prefix, name) = split.unwrap_or((&[], f.name));
        fill_main(&mut block, f, name, f.link);
        string(&mut block[PREFIX], prefix);
    } else {
        records.sort();
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        out.extend_from_slice(&pax_block(f.name, data.len() as u64));
        out.extend_from_slice(&data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        fill_main(&mut block, f, &to_ascii(f.name), &to_ascii(f.link));
    }
    set_magic(&mut block);
    set_checksum(&mut block);
    out.extend_from_slice(&block);
    out
}

/// Go's templateV7Plus: every numeric field formatted, uname/gname empty.
fn fill_main(block: &mut [u8; 512], f: &Fields, name: &[u8], link: &[u8]) {
    string(&mut block[NAME], name);
    string(&mut block[LINKNAME], link);
    octal(&mut block[MODE], f.mode);
    octal(&mut block[UID], f.uid);
    octal(&mut block[GID], f.gid);
    octal(&mut block[SIZE], f.size);
    octal(&mut block[MTIME], f.mtime);
    block[TYPEFLAG] = f.typeflag;
    octal(&mut block[DEVMAJOR], f.dev_major);
    octal(&mut block[DEVMINOR], f.dev_minor);
}

/// Go's writeRawFile for the extended header: `dir/PaxHeaders.0/base`, zero times and ids.
fn pax_block(name: &[u8], size: u64) -> [u8; 512] {
    let trimmed = name.strip_suffix(b"/").unwrap_or(name);
    let (dir, base): (&[u8], &[u8]) = if name.ends_with(b"/") {
        (trimmed, b"")
    } else {
        match trimmed.iter().rposition(|b| *b == b'/') {
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => (b"", trimmed),
        }
    };
    let mut path = Vec::new();
    for part in [dir, b"PaxHeaders.0".as_slice(), base] {
        if part.is_empty() {
            continue;
        }
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(part);
    }
    let mut path = to_ascii(&path);
    path.truncate(NAME.len());
    while path.last() == Some(&b'/') {
        path.pop();
    }
    let mut block = [0u8; 512];
    string(&mut block[NAME], &path);
    octal(&mut block[MODE], 0);
    octal(&mut block[UID], 0);
    octal(&mut block[GID], 0);
    octal(&mut block[SIZE], size);
    octal(&mut block[MTIME], 0);
    block[TYPEFLAG] = b'x';
    set_magic(&mut block);
    set_checksum(&mut block);
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(name: &'a [u8], link: &'a [u8]) -> Fields<'a> {
        Fields {
            name,
            link,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 3,
            mtime: 1_700_000_000,
            typeflag: b'0',
            dev_major: 0,
            dev_minor: 0,
        }
    }

    #[test]
    fn plain_entry_matches_go_layout() {
        let b = header_blocks(&fields(b"etc/hosts", b""), &[]);
        assert_eq!(b.len(), 512);
        assert_eq!(&b[100..108], b"0000644\0");
        assert_eq!(&b[124..136], b"00000000003\0");
        assert_eq!(&b[257..265], b"ustar\x0000");
        // Go formats devmajor/devminor even for regular files, and the checksum as
        // six digits, NUL, space.
        assert_eq!(&b[329..337], b"0000000\0");
        assert_eq!(b[154], 0);
        assert_eq!(b[155], b' ');
        // Other tar readers accept it.
        let h = tar::Header::from_byte_slice(&b);
        assert_eq!(h.path().unwrap().to_str(), Some("etc/hosts"));
        assert_eq!(h.cksum().unwrap(), {
            let mut copy = b.clone();
            copy[148..156].fill(b' ');
            copy.iter().map(|x| *x as u32).sum::<u32>()
        });
    }

    #[test]
    fn long_ascii_paths_split_and_others_get_pax() {
        let long_dir = format!("{}/file", "d".repeat(120));
        let b = header_blocks(&fields(long_dir.as_bytes(), b""), &[]);
        assert_eq!(b.len(), 512, "split into prefix and name");
        assert_eq!(&b[345..465], "d".repeat(120).as_bytes());
        let long_name = "n".repeat(120);
        let b = header_blocks(&fields(long_name.as_bytes(), b""), &[]);
        assert_eq!(b.len(), 3 * 512);
        assert_eq!(&b[..25], b"PaxHeaders.0/nnnnnnnnnnnn");
        assert_eq!(b[156], b'x');
        let record = pax_record("path", long_name.as_bytes());
        assert_eq!(&b[512..512 + record.len()], record.as_slice());
        assert!(
            record.starts_with(b"130 path="),
            "{}",
            String::from_utf8_lossy(&record)
        );
        let b = header_blocks(&fields("dir/ü.txt".as_bytes(), b""), &[]);
        assert_eq!(&b[..21], b"dir/PaxHeaders.0/.txt");
        assert_eq!(&b[1024..1033], b"dir/.txt\0");
    }
}
