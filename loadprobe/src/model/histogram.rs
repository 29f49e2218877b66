//! The one way this crate records into a histogram.

use hdrhistogram::Histogram;

/// Records `value`, growing the histogram as needed. hdrhistogram's `saturating_record` clamps
/// to the current range even when the histogram could grow, and a fresh `Histogram::new` tracks
/// only up to 2,047: that once reported minute-long TIME_WAIT lifetimes as 2 ms.
pub fn record_growing(h: &mut Histogram<u64>, value: u64) {
    if h.record(value).is_err() {
        h.saturating_record(value);
    }
}
