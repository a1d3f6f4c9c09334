//! A minimal ZIP writer for `tunnel diag`: stored (uncompressed) entries, one archive built in
//! memory. Any unzip reads it; the diagnostic files are small text.

/// CRC-32 (IEEE), bitwise: the archive is written once per diagnostic run.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The archive of `files` (name, contents), in order.
pub fn stored(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    // 1980-01-01 00:00 in MS-DOS date/time.
    const DOS_DATE: u16 = 0x0021;
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let size = data.len() as u32;
        let name_len = name.len() as u16;
        for (buf, sig) in [(&mut out, 0x0403_4b50u32), (&mut central, 0x0201_4b50)] {
            buf.extend(sig.to_le_bytes());
            if sig == 0x0201_4b50 {
                buf.extend(20u16.to_le_bytes()); // made by
            }
            buf.extend(20u16.to_le_bytes()); // needed
            buf.extend(0x0800u16.to_le_bytes()); // UTF-8 names
            buf.extend(0u16.to_le_bytes()); // stored
            buf.extend(0u16.to_le_bytes()); // time
            buf.extend(DOS_DATE.to_le_bytes());
            buf.extend(crc.to_le_bytes());
            buf.extend(size.to_le_bytes());
            buf.extend(size.to_le_bytes());
            buf.extend(name_len.to_le_bytes());
            buf.extend(0u16.to_le_bytes()); // extra
            if sig == 0x0201_4b50 {
                buf.extend([0u8; 6]); // comment length, disk, internal attrs
                buf.extend((0o100644u32 << 16).to_le_bytes()); // external attrs: rw-r--r--
                buf.extend(offset.to_le_bytes());
            }
            buf.extend(name.as_bytes());
        }
        out.extend(data);
    }
    let cd_offset = out.len() as u32;
    let cd_size = central.len() as u32;
    let count = files.len() as u16;
    out.extend(central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]); // disk numbers
    out.extend(count.to_le_bytes());
    out.extend(count.to_le_bytes());
    out.extend(cd_size.to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_the_standard_check_string() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn unzip_reads_the_archive() {
        let Ok(dir) = tempfile::tempdir() else { return };
        let zip = dir.path().join("a.zip");
        let files = vec![
            ("a.txt".to_owned(), b"hello\n".to_vec()),
            ("b.json".to_owned(), b"{}\n".to_vec()),
        ];
        std::fs::write(&zip, stored(&files)).unwrap();
        // Python's zipfile checks the central directory and each CRC.
        let out = std::process::Command::new("python3")
            .args(["-c", "import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; print(sorted(z.namelist()), z.read('a.txt'))"])
            .arg(&zip)
            .output();
        let Ok(out) = out else { return };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "['a.txt', 'b.json'] b'hello\\n'"
        );
    }
}
