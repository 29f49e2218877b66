//! Histogram (de)serialization for run records: HdrHistogram's own compressed V2 format, so
//! records can be merged with each other and read by any HdrHistogram implementation.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

use super::ReportError;

/// The value of `histograms.encoding` in a record.
pub const HISTOGRAM_ENCODING: &str = "hdrhistogram-v2-deflate-base64";

pub fn encode_histogram(h: &Histogram<u64>) -> Result<String, ReportError> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(ReportError::Encode)?;
    Ok(STANDARD.encode(bytes))
}

pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, ReportError> {
    let bytes = STANDARD.decode(s).map_err(ReportError::Base64)?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(ReportError::Decode)
}
