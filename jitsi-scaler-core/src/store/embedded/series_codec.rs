//! The file's form of a sample series: fixed-width binary, 16 bytes a sample, written as it is
//! held (a series is rewritten at every commit that follows a check-in of its instance, so
//! this is most of what the writer encodes). Series written as JSON by earlier versions are
//! still read.
//!
//! Layout (little-endian): `0x01` (the format; JSON starts with `{`), `retention_ms: i64`,
//! `count: u32`, then `count` × (`at_ms: i64`, `value: f64`).

use std::sync::Arc;

use crate::metrics::MetricSample;
use crate::store::working_set::Series;

/// The first byte of a binary series.
const BINARY: u8 = 0x01;
/// The format byte, the retention and the count.
const HEADER: usize = 1 + 8 + 4;
/// One sample: its time and its value.
const SAMPLE: usize = 16;

/// The binary form of a series.
#[cfg(test)]
pub(super) fn encode(series: &Series) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_into(series, &mut bytes);
    bytes
}

/// Appends the binary form of a series to `bytes`.
pub(super) fn encode_into(series: &Series, bytes: &mut Vec<u8>) {
    bytes.reserve(HEADER + SAMPLE * series.samples.len());
    bytes.push(BINARY);
    bytes.extend_from_slice(&series.retention_ms.to_le_bytes());
    // A series holds one window of samples: far fewer than u32::MAX.
    let count = u32::try_from(series.samples.len()).unwrap_or(u32::MAX);
    bytes.extend_from_slice(&count.to_le_bytes());
    for s in series.samples.iter().take(count as usize) {
        bytes.extend_from_slice(&s.at_ms.to_le_bytes());
        bytes.extend_from_slice(&s.value.to_le_bytes());
    }
}

/// Why a series could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum DecodeError {
    /// A binary series of the wrong length.
    #[error("a binary series of {count} samples needs {needed} bytes, found {found}")]
    Length {
        count: usize,
        needed: usize,
        found: usize,
    },
    /// Neither binary nor valid JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Reads a series in either form.
pub(super) fn decode(bytes: &[u8]) -> Result<Series, DecodeError> {
    let Some((&BINARY, rest)) = bytes.split_first() else {
        return Ok(serde_json::from_slice(bytes)?);
    };
    let too_short = || DecodeError::Length {
        count: 0,
        needed: HEADER,
        found: bytes.len(),
    };
    let (retention, rest) = rest.split_first_chunk::<8>().ok_or_else(too_short)?;
    let (count, rest) = rest.split_first_chunk::<4>().ok_or_else(too_short)?;
    let count = u32::from_le_bytes(*count) as usize;
    let needed = count
        .checked_mul(SAMPLE)
        .and_then(|n| n.checked_add(HEADER));
    if needed != Some(bytes.len()) {
        return Err(DecodeError::Length {
            count,
            needed: needed.unwrap_or(usize::MAX),
            found: bytes.len(),
        });
    }
    let samples: Arc<[MetricSample]> = rest
        .chunks_exact(SAMPLE)
        .filter_map(|chunk| {
            let (at, value) = chunk.split_first_chunk::<8>()?;
            let value: &[u8; 8] = value.try_into().ok()?;
            Some(MetricSample {
                at_ms: i64::from_le_bytes(*at),
                value: f64::from_le_bytes(*value),
            })
        })
        .collect();
    Ok(Series {
        retention_ms: i64::from_le_bytes(*retention),
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(n: usize) -> Series {
        Series {
            retention_ms: 660_000,
            samples: (0..n)
                .map(|i| MetricSample {
                    at_ms: 1_795_346_890_000 + i as i64 * 30_000,
                    value: i as f64 / 7.0,
                })
                .collect(),
        }
    }

    #[test]
    fn a_series_reads_back_exactly_in_16_bytes_a_sample() {
        for n in [0, 1, 22] {
            let s = series(n);
            let bytes = encode(&s);
            assert_eq!(bytes.len(), HEADER + 16 * n);
            assert_eq!(decode(&bytes).expect("decode"), s);
        }
        let odd = Series {
            retention_ms: -1,
            samples: Arc::new([MetricSample {
                at_ms: i64::MIN,
                value: f64::MAX,
            }]),
        };
        assert_eq!(decode(&encode(&odd)).expect("decode"), odd);
    }

    #[test]
    fn a_json_series_of_an_earlier_version_is_read() {
        let s = series(3);
        let json = serde_json::to_vec(&s).expect("json");
        assert_eq!(json.first(), Some(&b'{'));
        assert_eq!(decode(&json).expect("decode"), s);
    }

    #[test]
    fn a_truncated_or_padded_series_is_an_error_not_a_guess() {
        let bytes = encode(&series(22));
        for len in [1, 5, HEADER - 1, HEADER, bytes.len() - 1] {
            let err = decode(&bytes[..len]).expect_err("truncated");
            assert!(matches!(err, DecodeError::Length { .. }), "{len}: {err}");
        }
        let mut padded = bytes.clone();
        padded.push(0);
        assert!(matches!(
            decode(&padded),
            Err(DecodeError::Length { count: 22, .. })
        ));
        let mut huge = bytes;
        huge[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge).is_err());
        assert!(decode(b"{not json").is_err());
        assert!(decode(b"").is_err());
    }
}
