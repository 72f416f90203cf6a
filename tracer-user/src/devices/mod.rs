//! What is known per object key and device: names, classes, servers, which process serves it;
//! and the daemon's own database client that fills gaps. Assembly and events report what they
//! see (observations); the registry keeps it, and the later stages ask it through methods.

pub mod dbclient;

use std::{
    borrow::Cow,
    sync::Arc,
    time::{Duration, Instant},
};

use hashbrown::{HashMap, HashSet};

pub use crate::assemble::DeviceFacts;
use crate::{
    assemble::naming::{DATABASE_DEVICE, DATABASE_KEY},
    stats::{StageStats, has_room},
};

/// Most devices known at once; beyond, new ones are refused and counted.
const MAX_DEVICES: usize = 65_536;
/// Most databases asked at once.
const MAX_DATABASES: usize = 1_024;
/// Least time between two imports from one database.
const IMPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Device name for an object key: without a database the key is the lowercased device name.
/// Opaque keys (database servers) are named by the registry, or shown in hex.
pub fn device_name_from_key(key: &[u8]) -> Option<String> {
    key_is_name(key).then(|| String::from_utf8_lossy(key).into_owned())
}

/// Whether an object key is a device's name (printable ASCII, not empty).
fn key_is_name(key: &[u8]) -> bool {
    !key.is_empty() && key.iter().all(u8::is_ascii_graphic)
}

/// Facts about a device and the traced process serving it, if known.
#[derive(Default)]
struct Device {
    facts: DeviceFacts,
    server_pid: Option<u32>,
}

/// The device registry. A device's entry goes when the process serving it is forgotten;
/// devices of processes the daemon does not trace stay until the table is full.
#[derive(Default)]
pub struct DeviceRegistry {
    devices: HashMap<Vec<u8>, Device>,
    /// Object keys each traced process serves.
    served: HashMap<u32, HashSet<Vec<u8>>>,
    /// When each `TANGO_HOST` was last asked for its devices.
    imports: HashMap<String, Instant>,
    refused_full: u64,
}

impl DeviceRegistry {
    /// Records facts about a device (a reply seen on the wire, the database, the process's
    /// command line).
    pub fn learn(&mut self, object_key: Vec<u8>, facts: DeviceFacts) {
        if let Some(device) = self.devices.get_mut(&object_key) {
            device.facts.merge(facts);
        } else if has_room(self.devices.len(), MAX_DEVICES, &mut self.refused_full) {
            self.devices.insert(object_key, Device { facts, server_pid: None });
        }
    }

    /// Process `pid` serves the device behind `object_key`.
    pub fn serves(&mut self, pid: u32, object_key: Vec<u8>) {
        if let Some(device) = self.devices.get_mut(&object_key) {
            device.server_pid = Some(pid);
        } else if has_room(self.devices.len(), MAX_DEVICES, &mut self.refused_full) {
            self.devices
                .insert(object_key.clone(), Device { facts: DeviceFacts::default(), server_pid: Some(pid) });
        }
        self.served.entry(pid).or_default().insert(object_key);
    }

    /// Facts about the device behind `object_key`, when known.
    pub fn facts(&self, object_key: &[u8]) -> Option<&DeviceFacts> {
        self.devices.get(object_key).map(|d| &d.facts)
    }

    /// The class of the device, once a reply or the database told it.
    pub fn class(&self, object_key: &[u8]) -> Option<&str> {
        self.facts(object_key).and_then(|f| f.dev_class.as_deref())
    }

    /// The device behind an object key: learnt from the database, else the key itself (devices
    /// without a database), `sys/database/2` for the database.
    pub fn name(&self, object_key: &[u8]) -> Option<String> {
        self.name_ref(object_key).map(Cow::into_owned)
    }

    /// [`name`](Self::name) without a copy (the per-span path).
    pub fn name_ref<'a>(&'a self, object_key: &'a [u8]) -> Option<Cow<'a, str>> {
        if let Some(name) = self.facts(object_key).and_then(|f| f.name.as_deref()) {
            return Some(Cow::Borrowed(name));
        }
        if object_key == DATABASE_KEY {
            return Some(Cow::Borrowed(DATABASE_DEVICE));
        }
        if !key_is_name(object_key) {
            return None;
        }
        // Printable ASCII: always UTF-8.
        Some(String::from_utf8_lossy(object_key))
    }

    /// Whether the name and class of the device are both known.
    pub fn is_known(&self, object_key: &[u8]) -> bool {
        self.class(object_key).is_some() && self.has_name(object_key)
    }

    /// Whether [`name`](Self::name) knows the device's name, without making it.
    pub fn has_name(&self, object_key: &[u8]) -> bool {
        self.facts(object_key).is_some_and(|f| f.name.is_some())
            || object_key == DATABASE_KEY
            || key_is_name(object_key)
    }

    /// Object keys `pid` serves.
    pub fn served_by(&self, pid: u32) -> impl Iterator<Item = &Vec<u8>> + '_ {
        self.served.get(&pid).into_iter().flatten()
    }

    /// Event spans name their device; database servers know it by an opaque key.
    pub fn served_key(&self, pid: u32, key: Arc<[u8]>) -> Arc<[u8]> {
        if self.devices.get(&*key).is_some_and(|d| d.facts != DeviceFacts::default()) {
            return key;
        }
        self.served_by(pid)
            .find(|served| self.name(served).is_some_and(|name| name.as_bytes() == &*key))
            .map_or(key, |served| Arc::from(served.as_slice()))
    }

    /// The object key of the device `pid` serves under `name` (any case): one it was seen serving,
    /// else one the database or the wire named so and no other process serves. Linear in the
    /// devices known: callers keep what it found.
    pub fn key_named(&self, pid: u32, name: &str) -> Option<Vec<u8>> {
        let named = |key: &Vec<u8>| self.name(key).is_some_and(|n| n.eq_ignore_ascii_case(name));
        if let Some(key) = self.served_by(pid).find(|key| named(key)) {
            return Some(key.clone());
        }
        self.devices
            .iter()
            .find(|(key, device)| device.server_pid.is_none_or(|p| p == pid) && named(key))
            .map(|(key, _)| key.clone())
    }

    /// Whether the database at `tango_host` may be asked again now; notes the attempt.
    pub fn want_import(&mut self, tango_host: &str) -> bool {
        if self.imports.get(tango_host).is_some_and(|t| t.elapsed() < IMPORT_INTERVAL) {
            return false;
        }
        if !self.imports.contains_key(tango_host) {
            // Old entries matter only for the interval: drop them before refusing.
            self.imports.retain(|_, t| t.elapsed() < IMPORT_INTERVAL);
            if !has_room(self.imports.len(), MAX_DATABASES, &mut self.refused_full) {
                return false;
            }
        }
        self.imports.insert(tango_host.to_string(), Instant::now());
        true
    }

    /// A process is gone for good: the devices it served go with it.
    pub fn forget_process(&mut self, pid: u32) {
        for key in self.served.remove(&pid).into_iter().flatten() {
            if self.devices.get(&key).is_some_and(|d| d.server_pid == Some(pid)) {
                self.devices.remove(&key);
            }
        }
    }

    pub fn report(&self, out: &mut StageStats) {
        const STAGE: &str = "devices";
        out.loss(STAGE, "refused_table_full", self.refused_full);
        out.size(STAGE, "device_entries", self.devices.len());
        out.size(STAGE, "served_process_entries", self.served.len());
        out.size(STAGE, "database_entries", self.imports.len());
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic,
        reason = "tests"
    )]
    use super::*;

    #[test]
    fn a_device_goes_with_the_process_serving_it() {
        let mut registry = DeviceRegistry::default();
        let facts = DeviceFacts { dev_class: Some("Demo".into()), ..Default::default() };
        registry.learn(b"test/demo/1".to_vec(), facts);
        registry.serves(7, b"test/demo/1".to_vec());
        registry.learn(b"other/remote/1".to_vec(), DeviceFacts::default());
        assert!(registry.is_known(b"test/demo/1"));
        assert_eq!(registry.name(DATABASE_KEY).as_deref(), Some(DATABASE_DEVICE));
        registry.forget_process(7);
        assert_eq!(registry.facts(b"test/demo/1"), None);
        assert!(registry.facts(b"other/remote/1").is_some(), "served by no traced process");
        assert_eq!(registry.served_by(7).count(), 0);
    }
}
