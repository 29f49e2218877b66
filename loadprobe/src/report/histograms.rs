//! Histogram (de)serialization for run records: HdrHistogram's own compressed V2 format, so
//! records can be merged with each other and read by any HdrHistogram implementation.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

use super::ReportError;

/// The value of `histograms.encoding` in a record.
pub const HISTOGRAM_ENCODING: &str = "hdrhistogram-v2-deflate-base64";

/// Records `value`, growing the histogram as needed. hdrhistogram's `saturating_record` clamps
/// to the current range even when the histogram could grow, and a fresh `Histogram::new` tracks
/// only up to 2,047: that once reported minute-long TIME_WAIT lifetimes as 2 ms.
pub fn record_growing(h: &mut Histogram<u64>, value: u64) {
    if h.record(value).is_err() {
        h.saturating_record(value);
    }
}

pub fn encode_histogram(h: &Histogram<u64>) -> Result<String, ReportError> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| ReportError::Encode(format!("{e:?}")))?;
    Ok(STANDARD.encode(bytes))
}

pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, ReportError> {
    let bytes = STANDARD
        .decode(s)
        .map_err(|e| ReportError::Decode(e.to_string()))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| ReportError::Decode(format!("{e:?}")))
}
