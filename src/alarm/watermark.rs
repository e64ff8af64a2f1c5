//! `--memory-high-watermark` and `--disk-free-limit` values, as RabbitMQ's
//! `vm_memory_high_watermark` (relative or absolute) and `disk_free_limit.absolute` read them.

/// The memory high watermark as configured: a share of the memory the process may use, or a
/// number of bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryWatermark {
    /// `0.0..=1.0` of the machine's memory, or of the cgroup's limit when that is lower.
    Fraction(f64),
    Absolute(u64),
}

// A fraction is never NaN (parsing accepts only `0.0..=1.0`), so equality is total.
impl Eq for MemoryWatermark {}

impl MemoryWatermark {
    /// The limit in bytes, given the machine's memory and the cgroup's limit (if any). A
    /// container's limit is what the kernel enforces, so it wins when it is the lower one.
    pub fn limit_bytes(self, machine_bytes: u64, cgroup_limit_bytes: Option<u64>) -> u64 {
        match self {
            MemoryWatermark::Absolute(bytes) => bytes,
            MemoryWatermark::Fraction(share) => {
                let available = cgroup_limit_bytes.map_or(machine_bytes, |c| c.min(machine_bytes));
                (available as f64 * share) as u64
            }
        }
    }
}

/// The disk free limit: bytes that must stay free on the data directory's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskFreeLimit(pub u64);

/// A number with a decimal point is a fraction of memory (`0.4`); an integer, with or without an
/// information unit (`1073741824`, `1GiB`, `1GB`), is bytes. `None`: neither, or a fraction
/// outside `0.0..=1.0`.
pub fn parse_memory_watermark(text: &str) -> Option<MemoryWatermark> {
    let text = text.trim();
    if text.contains('.') {
        let share: f64 = text.parse().ok()?;
        return (0.0..=1.0)
            .contains(&share)
            .then_some(MemoryWatermark::Fraction(share));
    }
    parse_bytes(text).map(MemoryWatermark::Absolute)
}

pub fn parse_disk_free_limit(text: &str) -> Option<DiskFreeLimit> {
    parse_bytes(text.trim()).map(DiskFreeLimit)
}

/// Bytes with RabbitMQ's information units (`rabbit_resource_monitor_misc`): `k`/`K`/`KiB`/`kiB`
/// 1024, `kB`/`KB` 1000, `M`/`MiB` and `MB`, `G`/`GiB` and `GB`, `T`/`TiB` and `TB` likewise.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let number: u64 = digits.parse().ok()?;
    let multiplier: u64 = match unit.trim() {
        "" => 1,
        "k" | "K" | "KiB" | "kiB" => 1 << 10,
        "kB" | "KB" => 1000,
        "M" | "MiB" => 1 << 20,
        "MB" => 1_000_000,
        "G" | "GiB" => 1 << 30,
        "GB" => 1_000_000_000,
        "T" | "TiB" => 1 << 40,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn a_decimal_is_a_fraction_an_integer_with_or_without_unit_is_bytes() {
        assert_eq!(
            parse_memory_watermark("0.4"),
            Some(MemoryWatermark::Fraction(0.4))
        );
        assert_eq!(
            parse_memory_watermark("1.0"),
            Some(MemoryWatermark::Fraction(1.0))
        );
        assert_eq!(
            parse_memory_watermark("1GiB"),
            Some(MemoryWatermark::Absolute(GIB))
        );
        assert_eq!(
            parse_memory_watermark("1GB"),
            Some(MemoryWatermark::Absolute(1_000_000_000))
        );
        assert_eq!(
            parse_memory_watermark("1073741824"),
            Some(MemoryWatermark::Absolute(GIB))
        );
        assert_eq!(
            parse_memory_watermark(" 512MiB "),
            Some(MemoryWatermark::Absolute(512 << 20))
        );
    }

    #[test]
    fn garbage_and_shares_outside_zero_to_one_are_refused() {
        for bad in [
            "",
            "1.5",
            "-0.1",
            "0.4.1",
            "GiB",
            "1 parsec",
            "1XB",
            "-5",
            "99999999999T",
        ] {
            assert_eq!(parse_memory_watermark(bad), None, "{bad:?}");
        }
        assert_eq!(parse_disk_free_limit("lots"), None);
    }

    #[test]
    fn a_fraction_applies_to_the_cgroup_limit_when_it_is_lower_than_the_machine() {
        let watermark = MemoryWatermark::Fraction(0.5);
        assert_eq!(watermark.limit_bytes(8 * GIB, None), 4 * GIB);
        assert_eq!(watermark.limit_bytes(8 * GIB, Some(2 * GIB)), GIB);
        // A cgroup allowing more than the machine has changes nothing.
        assert_eq!(watermark.limit_bytes(8 * GIB, Some(64 * GIB)), 4 * GIB);
        // Bytes are bytes whatever the machine.
        assert_eq!(
            MemoryWatermark::Absolute(GIB).limit_bytes(8 * GIB, Some(GIB / 2)),
            GIB
        );
    }

    #[test]
    fn disk_limits_take_rabbitmq_units() {
        assert_eq!(
            parse_disk_free_limit("50MB"),
            Some(DiskFreeLimit(50_000_000))
        );
        assert_eq!(parse_disk_free_limit("2GiB"), Some(DiskFreeLimit(2 * GIB)));
        assert_eq!(parse_disk_free_limit("4096"), Some(DiskFreeLimit(4096)));
    }
}
