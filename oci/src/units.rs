//! Sizes as docker prints them.

/// Bytes as docker prints them: "0B", "4.1kB", "12.3MB", "1.2GB" (decimal units).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn decimal_units_with_one_decimal() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_100), "4.1kB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(1_200_000_000), "1.2GB");
        assert_eq!(human_size(3_000_000_000_000_000), "3000.0TB");
    }
}
