//! Percentiles of the scenario's request latencies.

/// The `q` quantile of `values` (microseconds), in milliseconds; 0 when empty.
pub(super) fn percentile_ms(values: &mut [u64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len());
    values[rank - 1] as f64 / 1000.0
}
