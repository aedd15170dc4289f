//! Time formats S3 uses: `x-amz-date` (ISO 8601 basic) and XML timestamps (ISO 8601 extended).

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

const AMZ_DATE: &[FormatItem<'static>] = format_description!("[year][month][day]T[hour][minute][second]Z");
const ISO8601: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// Parses `YYYYMMDD'T'HHMMSS'Z'`.
pub fn parse_amz_date(s: &str) -> Option<SystemTime> {
    if s.len() != 16 {
        return None;
    }
    let dt = time::PrimitiveDateTime::parse(s, AMZ_DATE).ok()?;
    Some(dt.assume_utc().into())
}

/// Parses an ISO 8601 UTC time as POST policies write it: `2030-01-01T00:00:00Z` or `…00.000Z`.
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    let t = OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.into())
}

/// Formats `YYYYMMDD'T'HHMMSS'Z'`.
pub fn format_amz_date(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(AMZ_DATE).unwrap_or_default()
}

/// Formats `YYYY-MM-DDTHH:MM:SS.mmmZ` as S3 writes in XML.
pub fn iso8601(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(ISO8601).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn amz_dates_round_trip_and_reject_garbage() {
        let t = parse_amz_date("20130524T000000Z").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1_369_353_600));
        assert_eq!(format_amz_date(t), "20130524T000000Z");
        assert!(parse_amz_date("2013-05-24T00:00:00Z").is_none());
        assert!(parse_amz_date("20131324T000000Z").is_none());
        assert!(parse_amz_date("").is_none());
        assert_eq!(iso8601(t), "2013-05-24T00:00:00.000Z");
    }
}
