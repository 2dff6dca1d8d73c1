//! Byte sizes as operators write them in settings and chain files: `512`,
//! `64K`, `64M`, `2G`, `1T` (powers of 1024, as systemd reads them), in
//! either case, with an optional `B` or `iB` (`64MiB`, `64mb`).

/// Parse a size; the error says what was wrong in words.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix("ib"))
        .or_else(|| t.strip_suffix(['B', 'b']))
        .unwrap_or(t);
    let (number, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], t[i..].trim()),
        None => (t, ""),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 512, 64K, 64M or 2G"))?;
    let factor: u64 = match unit {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        "T" | "t" => 1 << 40,
        _ => return Err(format!("{text:?} has an unknown unit; use K, M, G or T")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_in_every_spelling() {
        for (text, bytes) in [
            ("512", 512),
            ("64K", 64 << 10),
            ("64k", 64 << 10),
            ("64M", 64 << 20),
            ("64m", 64 << 20),
            ("64MB", 64 << 20),
            ("64mb", 64 << 20),
            ("2GiB", 2 << 30),
            ("2gib", 2 << 30),
            ("1T", 1 << 40),
            (" 8M ", 8 << 20),
            ("100B", 100),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in [
            "",
            "M",
            "12X",
            "1.5G",
            "-1M",
            "99999999999999999999T",
            "5 5M",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
