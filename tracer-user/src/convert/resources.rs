//! OpenTelemetry resources and scopes of traced processes and devices, as cppTango builds them.

use std::borrow::Cow;

use hashbrown::HashMap;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::Resource;

use crate::{
    devices::{DeviceFacts, device_name_from_key},
    discover::procinfo::ProcessInfo,
    stats::StageStats,
};

/// Default `service.name` of cppTango client processes.
pub const DEFAULT_SERVICE_NAME: &str = "tango.telemetry.default";
/// cppTango's instrumentation scope name.
pub const SCOPE_NAME: &str = "tango.cpp";

/// Which resource a span carries; borrowed, so that finding a cached resource copies nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKey<'a> {
    /// A process outside any device context (a client, or a server's own threads).
    Process { pid: u32 },
    /// A device of a server process.
    Device { pid: u32, object_key: &'a [u8] },
}

/// Builds and caches resources.
#[derive(Default)]
pub struct Resources {
    /// Processes' resources, by pid and by whether the process serves (a client may turn into a
    /// server).
    processes: HashMap<(u32, bool), Resource>,
    /// Devices' resources, by serving pid and object key (looked up by a borrowed key).
    devices: HashMap<u32, HashMap<Vec<u8>, Resource>>,
}

impl Resources {
    pub fn report(&self, out: &mut StageStats) {
        let devices: usize = self.devices.values().map(HashMap::len).sum();
        out.size("convert", "resource_entries", self.processes.len() + devices);
    }

    /// Forgets everything about `pid` (it exited).
    pub fn forget(&mut self, pid: u32) {
        self.processes.retain(|(p, _), _| *p != pid);
        self.devices.remove(&pid);
    }

    /// The resource of `key`; `is_server` says whether the process serves devices.
    /// `device` is `None` while the device class is still unknown: such resources are not cached.
    pub fn resolve(
        &mut self,
        key: ResourceKey<'_>,
        process: Option<&ProcessInfo>,
        is_server: bool,
        device_name: Option<&str>,
        device: Option<&DeviceFacts>,
    ) -> Resource {
        let cached = match key {
            ResourceKey::Process { pid } => self.processes.get(&(pid, is_server)),
            ResourceKey::Device { pid, object_key } => self.devices.get(&pid).and_then(|d| d.get(object_key)),
        };
        if let Some(resource) = cached {
            return resource.clone();
        }
        let pid = match key {
            ResourceKey::Process { pid } | ResourceKey::Device { pid, .. } => pid,
        };
        let mut attributes = vec![
            KeyValue::new("service.namespace", "tango"),
            KeyValue::new("tango.process.id", i64::from(pid)),
            KeyValue::new("telemetry.sdk.name", "opentelemetry"),
            KeyValue::new("telemetry.sdk.language", "rust"),
            KeyValue::new("telemetry.sdk.version", "0.33"),
            KeyValue::new("telemetry.distro.name", "tango-tracer"),
            KeyValue::new("telemetry.distro.version", env!("CARGO_PKG_VERSION")),
        ];
        let tango_host = process.and_then(|p| p.tango_host());
        let cacheable = match key {
            ResourceKey::Device { object_key, .. } => {
                attributes.push(KeyValue::new("tango.process.kind", "server"));
                let class = device.and_then(|d| d.dev_class.clone());
                attributes.push(KeyValue::new(
                    "service.name",
                    class.clone().unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string()),
                ));
                if let Some(name) = device_name {
                    attributes.push(KeyValue::new("service.instance.id", name.to_string()));
                }
                if let Some(server) = device.and_then(|d| d.server_id.clone()) {
                    attributes.push(KeyValue::new("tango.server.name", server));
                }
                // Devices served without a database have their name as object key; cppTango
                // then reports no tango.host.
                let without_database = device_name_from_key(object_key).is_some();
                if let (Some(host), false) = (tango_host, without_database) {
                    attributes.push(KeyValue::new("tango.host", host));
                }
                class.is_some() && device_name.is_some()
            }
            ResourceKey::Process { .. } => {
                attributes
                    .push(KeyValue::new("tango.process.kind", if is_server { "server" } else { "client" }));
                let service = process
                    .and_then(|p| p.environ.get("PYTANGO_TELEMETRY_CLIENT_SERVICE_NAME"))
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_string());
                attributes.push(KeyValue::new("service.name", service));
                if let Some(host) = tango_host {
                    attributes.push(KeyValue::new("tango.host", host));
                }
                // Cached per kind: the kind may still turn from client to server.
                true
            }
        };
        let resource = Resource::builder_empty().with_attributes(attributes).build();
        if cacheable {
            match key {
                ResourceKey::Process { pid } => {
                    self.processes.insert((pid, is_server), resource.clone());
                }
                ResourceKey::Device { pid, object_key } => {
                    self.devices.entry(pid).or_default().insert(object_key.to_vec(), resource.clone());
                }
            }
        }
        resource
    }
}

/// The instrumentation scope of spans of a process: cppTango's, versioned by its libtango.
pub fn scope_for(process: Option<&ProcessInfo>) -> InstrumentationScope {
    let version = process.and_then(|p| p.tango_version()).unwrap_or("unknown");
    InstrumentationScope::builder(SCOPE_NAME).with_version(interned_version(version)).build()
}

/// Most distinct libtango versions whose text is kept for the daemon's life.
const MAX_INTERNED_VERSIONS: usize = 32;

thread_local! {
    /// The libtango versions seen: a host has a handful, and every span carries one.
    static VERSIONS: std::cell::RefCell<Vec<&'static str>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `version` in storage that lives as long as the daemon, so that the scope of every span
/// borrows it rather than copying it (an allocation per span, freed by the exporter); past
/// [`MAX_INTERNED_VERSIONS`] a copy.
fn interned_version(version: &str) -> Cow<'static, str> {
    VERSIONS.with_borrow_mut(|versions| {
        if let Some(kept) = versions.iter().find(|kept| **kept == version) {
            return Cow::Borrowed(*kept);
        }
        if versions.len() >= MAX_INTERNED_VERSIONS {
            return Cow::Owned(version.to_owned());
        }
        let kept: &'static str = Box::leak(version.into());
        versions.push(kept);
        Cow::Borrowed(kept)
    })
}
