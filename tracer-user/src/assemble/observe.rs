//! Facts seen on the wire that other stages learn from: devices (names, classes, servers) and
//! their telemetry configuration. The assembly stage reports them; it keeps none of them.

use tracer_wire::tango::ArgValue;

use super::span::SpanContextLite;

/// What is known of the device behind an object key, from `info` replies and database traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Device name (from the database; without one the key itself is the name).
    pub name: Option<String>,
    pub dev_class: Option<String>,
    /// `Server/instance`.
    pub server_id: Option<String>,
}

impl DeviceFacts {
    /// Keeps what `self` knows and adds what `other` knows besides.
    pub fn merge(&mut self, other: DeviceFacts) {
        if other.name.is_some() {
            self.name = other.name;
        }
        if other.dev_class.is_some() {
            self.dev_class = other.dev_class;
        }
        if other.server_id.is_some() {
            self.server_id = other.server_id;
        }
    }
}

/// Device properties: (name, values), names lowercased.
pub type Properties = Vec<(String, Vec<String>)>;

/// Configuration-relevant facts seen on the wire, for the daemon's configuration resolution.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// Facts about the device behind `object_key` (an `info` reply, a database call).
    Device { object_key: Vec<u8>, facts: DeviceFacts },
    /// A `DbGetDeviceProperty` answer: the device's properties as the database returned them.
    DeviceProperties { device: String, properties: Properties },
    /// A command arrived at a device of server process `pid` (admin commands change telemetry).
    Command { pid: u32, object_key: Vec<u8>, command: String, argin: Option<ArgValue> },
    /// Process `pid` serves the device behind `object_key`.
    Serves { pid: u32, object_key: Vec<u8> },
    /// Process `pid` exported (started) `device` through the database.
    Exported { pid: u32, device: String },
    /// A server span took its client's trace id after it started (the client's write was
    /// reported after the server's read): what was logged under `old` belongs to `new`.
    Renamed { old: SpanContextLite, new: SpanContextLite },
}

/// `DbGetDeviceProperty` answers `[device, N, name₁, n₁, value…, name₂, n₂, value…, …]`.
pub fn parse_property_answer(answer: &[String]) -> Option<(String, Properties)> {
    let mut items = answer.iter();
    let device = items.next()?.to_ascii_lowercase();
    let count: usize = items.next()?.trim().parse().ok()?;
    let mut properties = Vec::new();
    let mut items = items.peekable();
    for _ in 0..count {
        let name = items.next()?.to_ascii_lowercase();
        let values: usize = items.next()?.trim().parse().ok()?;
        let values: Vec<String> = items.by_ref().take(values).cloned().collect();
        // An undefined property answers a count of 0 and a " " placeholder.
        if values.is_empty() && items.peek().is_some_and(|v| v.as_str() == " ") {
            items.next();
        }
        properties.push((name, values));
    }
    Some((device, properties))
}

/// What a call to the database device teaches, both ends see it: `DbImportDevice` replies
/// (`[name, IOR, version, server, host, class]`), `DbExportDevice` arguments
/// (`[name, IOR, host, pid, version]`), `DbGetDeviceProperty` answers. `caller` is the process
/// that made the call.
pub fn database_call(
    caller: u32,
    command: &str,
    argin: Option<&ArgValue>,
    reply: Option<&ArgValue>,
    out: &mut Vec<Observation>,
) {
    let from_ior = |ior: &str| tracer_wire::ior::parse_ior(ior).ok().map(|ior| ior.object_key);
    if command.eq_ignore_ascii_case("DbImportDevice")
        && let Some(ArgValue::LongStringArray { strings, .. }) = reply
        && let [name, ior, _version, server, _host, class, ..] = strings.as_slice()
        && let Some(object_key) = from_ior(ior)
    {
        let facts = DeviceFacts {
            name: Some(name.to_ascii_lowercase()),
            dev_class: Some(class.clone()),
            server_id: Some(server.clone()),
        };
        out.push(Observation::Device { object_key, facts });
    } else if command.eq_ignore_ascii_case("DbGetDeviceProperty")
        && let Some(ArgValue::StringArray(answer)) = reply
        && let Some((device, properties)) = parse_property_answer(answer)
    {
        out.push(Observation::DeviceProperties { device, properties });
    } else if command.eq_ignore_ascii_case("DbExportDevice")
        && let Some(ArgValue::StringArray(args)) = argin
        && let [name, ior, ..] = args.as_slice()
        && let Some(object_key) = from_ior(ior)
    {
        let name = name.to_ascii_lowercase();
        let facts = DeviceFacts { name: Some(name.clone()), ..Default::default() };
        out.push(Observation::Device { object_key, facts });
        out.push(Observation::Exported { pid: caller, device: name });
    }
}
