//! `google.protobuf.Timestamp` with protojson's JSON form.
//!
//! pbjson-types' Timestamp prints `+00:00`; protojson (and so Hubble) prints
//! `Z` with 0, 3, 6 or 9 fractional digits, e.g. `2023-11-14T22:13:20.123Z`.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, Utc};

/// Wire-identical to `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Message)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Non-negative fraction of a second, 0..=999_999_999.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// Nanoseconds since the Unix epoch.
    pub fn as_unix_nanos(&self) -> i128 {
        i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanos)
    }

    /// From nanoseconds since the Unix epoch.
    pub fn from_unix_nanos(ns: u64) -> Self {
        Self {
            seconds: (ns / 1_000_000_000) as i64,
            nanos: (ns % 1_000_000_000) as i32,
        }
    }

    fn to_datetime(self) -> Option<DateTime<Utc>> {
        let nanos = u32::try_from(self.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)?;
        DateTime::from_timestamp(self.seconds, nanos)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self {
                seconds: d.as_secs() as i64,
                nanos: d.subsec_nanos() as i32,
            },
            Err(e) => {
                // Before the epoch: seconds negative, nanos still positive.
                let d = e.duration();
                let (mut s, mut n) = (-(d.as_secs() as i64), -(d.subsec_nanos() as i32));
                if n < 0 {
                    s -= 1;
                    n += 1_000_000_000;
                }
                Self {
                    seconds: s,
                    nanos: n,
                }
            }
        }
    }
}

impl TryFrom<Timestamp> for SystemTime {
    type Error = &'static str;
    fn try_from(t: Timestamp) -> Result<Self, Self::Error> {
        let nanos = u32::try_from(t.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)
            .ok_or("timestamp nanos out of range")?;
        if t.seconds >= 0 {
            UNIX_EPOCH
                .checked_add(Duration::new(t.seconds as u64, nanos))
                .ok_or("timestamp out of range")
        } else {
            UNIX_EPOCH
                .checked_sub(Duration::from_secs(t.seconds.unsigned_abs()))
                .and_then(|s| s.checked_add(Duration::from_nanos(u64::from(nanos))))
                .ok_or("timestamp out of range")
        }
    }
}

impl From<pbjson_types::Timestamp> for Timestamp {
    fn from(t: pbjson_types::Timestamp) -> Self {
        Self {
            seconds: t.seconds,
            nanos: t.nanos,
        }
    }
}

impl From<Timestamp> for pbjson_types::Timestamp {
    fn from(t: Timestamp) -> Self {
        Self {
            seconds: t.seconds,
            nanos: t.nanos,
        }
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let dt = self
            .to_datetime()
            .filter(|d| (1..=9999).contains(&d.year()))
            .ok_or_else(|| serde::ser::Error::custom("timestamp out of the RFC 3339 range"))?;
        let base = dt.format("%Y-%m-%dT%H:%M:%S");
        let n = self.nanos;
        let text = if n == 0 {
            format!("{base}Z")
        } else if n % 1_000_000 == 0 {
            format!("{base}.{:03}Z", n / 1_000_000)
        } else if n % 1_000 == 0 {
            format!("{base}.{:06}Z", n / 1_000)
        } else {
            format!("{base}.{n:09}Z")
        };
        s.serialize_str(&text)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let dt = DateTime::parse_from_rfc3339(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid timestamp {s:?}: {e}")))?;
        let dt = dt.with_timezone(&Utc);
        Ok(Self {
            seconds: dt.timestamp(),
            nanos: dt.timestamp_subsec_nanos() as i32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(t: Timestamp) -> String {
        serde_json::to_string(&t).unwrap()
    }

    #[test]
    fn protojson_fraction_digits() {
        let s = 1_700_000_000;
        assert_eq!(
            json(Timestamp {
                seconds: s,
                nanos: 0
            }),
            "\"2023-11-14T22:13:20Z\""
        );
        assert_eq!(
            json(Timestamp {
                seconds: s,
                nanos: 120_000_000
            }),
            "\"2023-11-14T22:13:20.120Z\""
        );
        assert_eq!(
            json(Timestamp {
                seconds: s,
                nanos: 123_456_000
            }),
            "\"2023-11-14T22:13:20.123456Z\""
        );
        assert_eq!(
            json(Timestamp {
                seconds: s,
                nanos: 1
            }),
            "\"2023-11-14T22:13:20.000000001Z\""
        );
    }

    #[test]
    fn invalid_nanos_is_an_error() {
        assert!(
            serde_json::to_string(&Timestamp {
                seconds: 0,
                nanos: -1
            })
            .is_err()
        );
        assert!(
            serde_json::to_string(&Timestamp {
                seconds: 0,
                nanos: 1_000_000_000
            })
            .is_err()
        );
    }

    #[test]
    fn parses_offsets() {
        let t: Timestamp = serde_json::from_str("\"2023-11-14T23:13:20.5+01:00\"").unwrap();
        assert_eq!(
            t,
            Timestamp {
                seconds: 1_700_000_000,
                nanos: 500_000_000
            }
        );
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
    }

    #[test]
    fn system_time_roundtrip() {
        let now = SystemTime::now();
        assert_eq!(SystemTime::try_from(Timestamp::from(now)).unwrap(), now);
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        let t = Timestamp::from(before);
        assert_eq!(
            t,
            Timestamp {
                seconds: -2,
                nanos: 500_000_000
            }
        );
        assert_eq!(SystemTime::try_from(t).unwrap(), before);
    }
}
