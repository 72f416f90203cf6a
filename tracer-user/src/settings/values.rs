//! Parsers of the values a setting takes, shared by the file, the environment and the command
//! line so that every source accepts and refuses the same text with the same message.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::probe::attach::{MAX_CAPTURE_BYTES, MAX_LOG_BYTES, MIN_CAPTURE_BYTES, MIN_LOG_BYTES};

/// `250ms`, `1.5s`, `2m`; a bare number is seconds.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) =
        text.find(|c: char| !c.is_ascii_digit() && c != '.').map(|i| text.split_at(i)).unwrap_or((text, "s"));
    let value: f64 = number.parse().map_err(|_| format!("not a duration: {text:?} (e.g. 500ms, 2s, 1m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {text:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// `64MiB`, `512KiB`, `1GiB`, a plain number of bytes; more than 0.
pub fn bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number.parse().map_err(|_| format!("not a size: {text:?} (e.g. 64MiB)"))?;
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        _ => return Err(format!("unknown unit in {text:?} (use KiB, MiB or GiB)")),
    };
    value.checked_mul(unit).filter(|&bytes| bytes > 0).ok_or_else(|| format!("size out of range: {text:?}"))
}

/// `NAME=VALUE`.
pub fn name_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}

/// `on`/`off` (also `true`/`false`).
pub fn on_off(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("expected on or off, got {text:?}")),
    }
}

pub fn capture_bytes(text: &str) -> Result<u32, String> {
    let value: u32 = text.trim().parse().map_err(|_| format!("not a number of bytes: {text:?}"))?;
    check_capture_bytes(value)
}

pub fn check_capture_bytes(value: u32) -> Result<u32, String> {
    if (MIN_CAPTURE_BYTES..=MAX_CAPTURE_BYTES).contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "must be between {MIN_CAPTURE_BYTES} and {MAX_CAPTURE_BYTES}: a GIOP header and the Tango \
             arguments need {MIN_CAPTURE_BYTES} (got {value})"
        ))
    }
}

pub fn log_bytes(text: &str) -> Result<u32, String> {
    let value: u32 = text.trim().parse().map_err(|_| format!("not a number of bytes: {text:?}"))?;
    check_log_bytes(value)
}

pub fn check_log_bytes(value: u32) -> Result<u32, String> {
    if (MIN_LOG_BYTES..=MAX_LOG_BYTES).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be between {MIN_LOG_BYTES} and {MAX_LOG_BYTES} (got {value})"))
    }
}

/// Longest time a finished span waits before export: at most 5 s so traces show up promptly.
pub fn export_interval(text: &str) -> Result<Duration, String> {
    let interval = duration(text)?;
    if interval.is_zero() || interval > Duration::from_secs(5) {
        return Err(format!("must be more than 0 and at most 5s so traces show up promptly (got {text:?})"));
    }
    Ok(interval)
}

/// Server spans are held that long: more than 0, at most 10 s.
pub fn peer_wait(text: &str) -> Result<Duration, String> {
    let wait = duration(text)?;
    if wait.is_zero() || wait > Duration::from_secs(10) {
        return Err(format!(
            "must be more than 0 and at most 10s: server spans are held that long (got {text:?})"
        ));
    }
    Ok(wait)
}

pub fn peer_retry(text: &str) -> Result<Duration, String> {
    let retry = duration(text)?;
    if retry < Duration::from_millis(100) || retry > Duration::from_secs(300) {
        return Err(format!("must be between 100ms and 300s (got {text:?})"));
    }
    Ok(retry)
}

pub fn metrics_interval(text: &str) -> Result<Duration, String> {
    let interval = duration(text)?;
    if interval < Duration::from_millis(100) {
        return Err(format!("must be at least 100ms (got {text:?})"));
    }
    Ok(interval)
}

pub fn max_series(text: &str) -> Result<usize, String> {
    let value: usize = text.trim().parse().map_err(|_| format!("not a count: {text:?}"))?;
    check_max_series(value)
}

pub fn check_max_series(value: usize) -> Result<usize, String> {
    if value == 0 { Err("must be at least 1".to_string()) } else { Ok(value) }
}

pub fn nice(text: &str) -> Result<i32, String> {
    let value: i32 = text.trim().parse().map_err(|_| format!("not a nice value: {text:?}"))?;
    check_nice(value)
}

pub fn check_nice(value: i32) -> Result<i32, String> {
    if (0..=19).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be between 0 and 19: the daemon only ever lowers its priority (got {value})"))
    }
}

pub fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| format!("not an ADDRESS:PORT: {text:?} (e.g. 0.0.0.0:4320)"))
}

pub fn pid(text: &str) -> Result<u32, String> {
    text.trim().parse().ok().filter(|&pid| pid > 0).ok_or_else(|| format!("not a process id: {text:?}"))
}

pub fn path(text: &str) -> Result<PathBuf, String> {
    if text.trim().is_empty() { Err("empty path".to_string()) } else { Ok(PathBuf::from(text)) }
}

/// An OTLP endpoint as the `OTEL_EXPORTER_OTLP_*ENDPOINT` variables take it: a URL with a scheme.
pub fn endpoint(text: &str) -> Result<String, String> {
    let text = text.trim();
    if !text.contains("://") {
        return Err(format!(
            "endpoint {text:?} has no scheme: add http:// or https:// in front (for example \"http://{text}\")"
        ));
    }
    // The http exporter's checks (a URL, a host) apply to either protocol's endpoint.
    tracer_export::Destination::parse("http", text).map_err(|e| e.to_string())?;
    Ok(text.to_string())
}

/// `http/protobuf` or `grpc`, as `OTEL_EXPORTER_OTLP_PROTOCOL`.
pub fn protocol(text: &str) -> Result<String, String> {
    match text.trim() {
        protocol @ ("http/protobuf" | "grpc") => Ok(protocol.to_string()),
        other => Err(format!("protocol {other:?} is not supported (expected http/protobuf or grpc)")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration("1500ms").unwrap(), Duration::from_millis(1500));
        assert_eq!(duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(duration("1m").unwrap(), Duration::from_secs(60));
        assert!(duration("5x").unwrap_err().contains("unknown unit"));
        assert_eq!(bytes("64MiB").unwrap(), 64 << 20);
        assert!(bytes("0").is_err());
        assert!(export_interval("6s").unwrap_err().contains("at most 5s"));
        assert!(capture_bytes("16").unwrap_err().contains("between 1024 and 8192"));
    }

    #[test]
    fn endpoints_need_a_scheme_and_a_host() {
        assert!(endpoint("127.0.0.1:4318").unwrap_err().contains("has no scheme"));
        assert!(endpoint("http://").is_err());
        assert_eq!(endpoint("http://collector:4318").unwrap(), "http://collector:4318");
        assert!(protocol("http/json").unwrap_err().contains("not supported"));
    }
}
