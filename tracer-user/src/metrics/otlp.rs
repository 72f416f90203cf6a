//! A [`Snapshot`] as one OTLP `ExportMetricsServiceRequest` (official protobuf types),
//! cumulative since the daemon started: one histogram per instrument (explicit buckets, seconds),
//! the event message counters derived from their counts, and the daemon's self-metrics.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum, metric::Data, number_data_point,
    },
    resource::v1::Resource,
};

use super::aggregate::{BUCKET_BOUNDS, Instrument, SeriesView, Snapshot};

/// The request of a snapshot, under a resource of `service.name` = `tango-tracer`.
pub fn request(snapshot: &Snapshot) -> ExportMetricsServiceRequest {
    let start = unix_nanos(snapshot.start);
    let time = unix_nanos(snapshot.time);
    let cumulative = AggregationTemporality::Cumulative as i32;
    let mut metrics = Vec::new();
    for instrument in Instrument::ALL {
        let series: Vec<&SeriesView> =
            snapshot.series.iter().filter(|s| s.instrument == instrument).collect();
        if series.is_empty() {
            continue;
        }
        let data_points = series
            .iter()
            .map(|view| HistogramDataPoint {
                attributes: attributes(view),
                start_time_unix_nano: start,
                time_unix_nano: time,
                count: view.histogram.count,
                sum: Some(view.histogram.sum),
                bucket_counts: view.histogram.buckets.to_vec(),
                explicit_bounds: BUCKET_BOUNDS.to_vec(),
                exemplars: Vec::new(),
                flags: 0,
                min: (view.histogram.count > 0).then_some(view.histogram.min),
                max: (view.histogram.count > 0).then_some(view.histogram.max),
            })
            .collect();
        metrics.push(metric(
            instrument.name(),
            instrument.description(),
            "s",
            Data::Histogram(Histogram { data_points, aggregation_temporality: cumulative }),
        ));
        if let Some(counter) = instrument.message_counter() {
            let data_points = series
                .iter()
                .map(|view| number(attributes(view), start, time, view.histogram.count))
                .collect();
            metrics.push(metric(
                counter,
                "Tango events",
                "{message}",
                Data::Sum(Sum { data_points, aggregation_temporality: cumulative, is_monotonic: true }),
            ));
        }
    }
    // Self-metrics come grouped by name.
    for metric_of_name in snapshot.own.chunk_by(|a, b| a.name == b.name) {
        let Some(first) = metric_of_name.first() else { continue };
        let data_points = metric_of_name
            .iter()
            .map(|m| {
                let attributes = m.attributes.iter().map(|(k, v)| string(k, v)).collect();
                number(attributes, start, time, m.value)
            })
            .collect();
        let data = match first.counter {
            true => Data::Sum(Sum { data_points, aggregation_temporality: cumulative, is_monotonic: true }),
            false => Data::Gauge(Gauge { data_points }),
        };
        metrics.push(metric(first.name, first.description, "1", data));
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![string("service.name", "tango-tracer")],
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "tango-tracer".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The attributes of a series: the Tango device, operation, argument and outcome, or only
/// `otel.metric.overflow` for the overflow series.
fn attributes(view: &SeriesView) -> Vec<KeyValue> {
    if view.overflow {
        return vec![KeyValue {
            key: "otel.metric.overflow".to_owned(),
            key_strindex: 0,
            value: Some(AnyValue { value: Some(any_value::Value::BoolValue(true)) }),
        }];
    }
    vec![
        string("rpc.system", "tango"),
        string("tango.device", &view.device),
        string("tango.operation", &view.operation),
        string("tango.operation.argument", &view.argument),
        string("tango.outcome", view.outcome.label()),
    ]
}

fn metric(name: &str, description: &str, unit: &str, data: Data) -> Metric {
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: unit.to_owned(),
        metadata: Vec::new(),
        data: Some(data),
    }
}

fn number(attributes: Vec<KeyValue>, start: u64, time: u64, value: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        exemplars: Vec::new(),
        flags: 0,
        value: Some(number_data_point::Value::AsInt(i64::try_from(value).unwrap_or(i64::MAX))),
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        key_strindex: 0,
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_owned())) }),
    }
}

/// Nanoseconds since the Unix epoch; a time before it (a clock gone wrong) is the epoch.
fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

    use super::*;
    use crate::metrics::aggregate::{Outcome, SpanMetrics};

    #[test]
    fn histograms_carry_buckets_counts_and_labels() {
        let mut metrics = SpanMetrics::new(10);
        metrics.record(Instrument::ClientCall, "a/b/c", "read_attribute", "x", Outcome::Error, 0.003);
        metrics.record(Instrument::EventDelivery, "a/b/c", "change", "x", Outcome::Ok, 0.001);
        let request = request(&metrics.snapshot(Vec::new()));
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["rpc.client.call.duration", "messaging.process.duration", "messaging.client.consumed.messages"]
        );
        let Some(Data::Histogram(histogram)) = &metrics[0].data else { panic!("not a histogram") };
        assert_eq!(histogram.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        let point = &histogram.data_points[0];
        assert_eq!(point.count, 1);
        assert_eq!(point.bucket_counts.len(), point.explicit_bounds.len() + 1);
        assert_eq!(point.bucket_counts.iter().sum::<u64>(), 1);
        assert!(point.attributes.contains(&string("tango.outcome", "error")));
        assert!(point.attributes.contains(&string("tango.operation.argument", "x")));
    }
}
