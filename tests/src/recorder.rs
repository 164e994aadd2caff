//! Reads back what a test recorded through the `metrics` facade, from `metrics-util`'s
//! debugging recorder: for the tests of the `metrics` features of the core (which includes
//! this file by path, as it cannot depend on this crate) and of background-tasks-apalis.

use std::collections::BTreeMap;

use metrics_util::debugging::{DebugValue, Snapshotter};

/// The metrics recorded so far as `name{label=value,...}` (labels sorted) to their value.
/// Reading a `Snapshotter` takes counters and gauges back to zero: each read is merged into
/// `seen` (counters summed, histograms appended, gauges replaced).
pub fn recorded<'a>(
    snapshotter: &Snapshotter,
    seen: &'a mut BTreeMap<String, DebugValue>,
) -> &'a BTreeMap<String, DebugValue> {
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let mut labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        labels.sort();
        let key = format!("{}{{{}}}", key.name(), labels.join(","));
        match (seen.get_mut(&key), value) {
            (Some(DebugValue::Counter(total)), DebugValue::Counter(value)) => *total += value,
            (Some(DebugValue::Histogram(all)), DebugValue::Histogram(values)) => {
                all.extend(values);
            }
            (_, value) => {
                seen.insert(key, value);
            }
        }
    }
    seen
}

/// The counter's value.
///
/// # Panics
///
/// When `key` is not a counter.
pub fn counter(metrics: &BTreeMap<String, DebugValue>, key: &str) -> u64 {
    match metrics.get(key) {
        Some(DebugValue::Counter(value)) => *value,
        other => panic!("{key}: expected a counter, got {other:?} among {metrics:#?}"),
    }
}

/// The gauge's value.
///
/// # Panics
///
/// When `key` is not a gauge.
pub fn gauge(metrics: &BTreeMap<String, DebugValue>, key: &str) -> f64 {
    match metrics.get(key) {
        Some(DebugValue::Gauge(value)) => value.into_inner(),
        other => panic!("{key}: expected a gauge, got {other:?} among {metrics:#?}"),
    }
}

/// The histogram's samples, sorted.
///
/// # Panics
///
/// When `key` is not a histogram.
pub fn histogram(metrics: &BTreeMap<String, DebugValue>, key: &str) -> Vec<f64> {
    match metrics.get(key) {
        Some(DebugValue::Histogram(values)) => {
            let mut values: Vec<f64> = values.iter().map(|v| v.into_inner()).collect();
            values.sort_by(f64::total_cmp);
            values
        }
        other => panic!("{key}: expected a histogram, got {other:?} among {metrics:#?}"),
    }
}
