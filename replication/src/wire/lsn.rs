//! WAL positions and the server's clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::WireError;

/// A WAL position (`pg_lsn`): a byte offset into the write-ahead log.
pub type Lsn = u64;

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;
const PG_EPOCH_UNIX_MICROS: i64 = PG_EPOCH_UNIX_SECS * 1_000_000;

/// Formats `lsn` the way the server prints `pg_lsn`: two uppercase hex halves without leading
/// zeros, e.g. `16/B374D848`.
pub fn format_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses the textual `pg_lsn` form (`16/B374D848`), as the server prints it in
/// `IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT` and `pg_replication_slots`.
///
/// Like the server's own input function, each half must be 1 to 8 hex digits; signs, spaces and
/// `0x` prefixes are rejected (`u32::from_str_radix` alone would accept a leading `+`).
pub fn parse_lsn(text: &str) -> Result<Lsn, WireError> {
    let invalid = || WireError::Lsn {
        input: text.to_string(),
    };
    let (high, low) = text.split_once('/').ok_or_else(invalid)?;
    let half = |part: &str| {
        let well_formed =
            (1..=8).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            return None;
        }
        u32::from_str_radix(part, 16).ok()
    };
    let high = half(high).ok_or_else(invalid)?;
    let low = half(low).ok_or_else(invalid)?;
    Ok((u64::from(high) << 32) | u64::from(low))
}

/// The current time as the replication protocol counts it: microseconds since 2000-01-01 UTC.
pub fn pg_now_micros() -> i64 {
    system_time_to_pg_micros(SystemTime::now())
}

/// Converts a wall-clock time to microseconds since 2000-01-01 UTC, saturating far outside the
/// representable range instead of panicking on a wild clock.
pub fn system_time_to_pg_micros(time: SystemTime) -> i64 {
    let unix_micros = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_micros())
            .map(|m| -m)
            .unwrap_or(i64::MIN),
    };
    unix_micros.saturating_sub(PG_EPOCH_UNIX_MICROS)
}

/// Converts a server timestamp (`send_time` of XLogData and keepalives) to wall-clock time,
/// e.g. to measure replication lag.
pub fn pg_micros_to_system_time(micros: i64) -> SystemTime {
    let unix_micros = micros.saturating_add(PG_EPOCH_UNIX_MICROS);
    let magnitude = Duration::from_micros(unix_micros.unsigned_abs());
    if unix_micros >= 0 {
        UNIX_EPOCH.checked_add(magnitude).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_the_server() {
        let cases: &[(u64, &str)] = &[
            (0, "0/0"),
            (1, "0/1"),
            (0x16_B374_D848, "16/B374D848"),
            (0x1_0000_0000, "1/0"),
            (0xFFFF_FFFF, "0/FFFFFFFF"),
            (u64::MAX, "FFFFFFFF/FFFFFFFF"),
            (0x0000_0001_0000_00AB, "1/AB"),
        ];
        for &(lsn, text) in cases {
            assert_eq!(format_lsn(lsn), text, "format {lsn:#x}");
            assert_eq!(parse_lsn(text).unwrap(), lsn, "parse {text}");
        }
    }

    #[test]
    fn parses_lowercase_and_leading_zeros() {
        assert_eq!(parse_lsn("16/b374d848").unwrap(), 0x16_B374_D848);
        assert_eq!(parse_lsn("00000016/0000000A").unwrap(), 0x16_0000_000A);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "/",
            "16",
            "16/",
            "/B374D848",
            "16/B374D848/1",
            "+1/0",
            "1/+0",
            "-1/0",
            " 1/0",
            "1/0 ",
            "0x1/0",
            "1/G",
            "123456789/0",
            "0/123456789",
            "1//0",
        ] {
            match parse_lsn(bad) {
                Err(WireError::Lsn { input }) => assert_eq!(input, bad),
                other => panic!("{bad:?} should be rejected, got {other:?}"),
            }
        }
    }

    #[test]
    fn pg_epoch_is_2000_01_01() {
        let y2k = UNIX_EPOCH + Duration::from_secs(946_684_800);
        assert_eq!(system_time_to_pg_micros(y2k), 0);
        assert_eq!(system_time_to_pg_micros(UNIX_EPOCH), -PG_EPOCH_UNIX_MICROS);
        assert_eq!(pg_micros_to_system_time(0), y2k);
        assert_eq!(pg_micros_to_system_time(-PG_EPOCH_UNIX_MICROS), UNIX_EPOCH);
        let later = y2k + Duration::from_micros(1_234_567);
        assert_eq!(system_time_to_pg_micros(later), 1_234_567);
        assert_eq!(pg_micros_to_system_time(1_234_567), later);
        // Well after 2000, and not absurdly far in the future.
        let now = pg_now_micros();
        assert!(now > 700_000_000_000_000, "{now}");
        assert!(now < 3_000_000_000_000_000, "{now}");
    }
}
