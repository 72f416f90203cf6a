//! Which Tango operation a GIOP operation is, what cppTango 10.3 calls its spans, and which
//! telemetry topic it belongs to; span names and attributes from the operation.

use std::{borrow::Cow, sync::Arc};

use opentelemetry::{KeyValue, Value};
use tracer_wire::tango::{ArgValue, ClntIdent, LockerLanguage, TangoCall};

/// The object key of the Tango database device when reached through `TANGO_HOST`.
pub const DATABASE_KEY: &[u8] = b"database";
/// The name clients use for the database device (its `TANGO_HOST` object).
pub const DATABASE_DEVICE: &str = "sys/database/2";

/// How an operation relates to what native telemetry traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationClass {
    /// Operations cppTango 10.3 traces (the `ClntIdent` family and `command_inout`).
    User,
    /// Calls to the Tango database device.
    Database,
    /// Operations native telemetry leaves out: ping, state, status, info, configuration queries.
    Extended,
    /// Event push and delivery (the `events` topic).
    Event,
    /// CORBA housekeeping (`_is_a`, `_non_existent`): never traced.
    Internal,
    /// User code inside a request (`always_executed_hook`, an attribute read, a command): what
    /// PyTango's own telemetry puts under `user`.
    UserCode,
}

/// A classified GIOP operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<'a> {
    /// The GIOP operation name (`read_attributes_5`), borrowed from the call.
    pub giop: &'a str,
    pub class: OperationClass,
}

impl<'a> Operation<'a> {
    pub fn classify(giop: &'a str, object_key: &[u8], call: &TangoCall) -> Operation<'a> {
        let user = matches!(
            call,
            TangoCall::ReadAttributes { .. }
                | TangoCall::WriteAttributes { .. }
                | TangoCall::WriteReadAttributes { .. }
                | TangoCall::CommandInout { .. }
                | TangoCall::SetAttributeConfig { .. }
                | TangoCall::Pipe { .. }
        );
        let class = if giop == "_is_a" || giop == "_non_existent" || giop.starts_with("_interface") {
            OperationClass::Internal
        } else if object_key == DATABASE_KEY && user {
            OperationClass::Database
        } else if user {
            OperationClass::User
        } else {
            OperationClass::Extended
        };
        Operation { giop, class }
    }

    /// `read_attributes_5` → 5; `command_inout` → 1.
    fn idl_version(&self) -> Option<u32> {
        let (_, suffix) = self.giop.rsplit_once('_')?;
        suffix.parse().ok()
    }

    /// The servant method cppTango names its SERVER span after: `Tango::Device_5Impl::read_attributes_5`.
    /// The operations clients send most are named without formatting (once per span).
    pub fn server_span_name(&self) -> Cow<'static, str> {
        match known_server_span_name(self.giop) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(self.formatted_server_span_name()),
        }
    }

    fn formatted_server_span_name(&self) -> String {
        let method = match self.giop {
            "_get_state" => "state",
            "_get_status" => "status",
            "_get_description" => "description",
            "_get_name" => "name",
            "_get_adm_name" => "adm_name",
            other => other,
        };
        match self.idl_version() {
            Some(n) if n >= 2 => format!("Tango::Device_{n}Impl::{method}"),
            _ => format!("Tango::DeviceImpl::{method}"),
        }
    }

    /// The client API method cppTango names its CLIENT span after.
    pub fn client_span_name(&self, call: &TangoCall) -> Cow<'static, str> {
        let base = self.giop.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end_matches('_');
        match call {
            TangoCall::ReadAttributes { names } if names.len() == 1 => {
                Cow::Borrowed("Tango::DeviceProxy::read_attribute")
            }
            TangoCall::ReadAttributes { .. } => {
                Cow::Borrowed("std::vector<Tango::DeviceAttribute>* Tango::DeviceProxy::read_attributes")
            }
            TangoCall::WriteAttributes { names } if names.len() == 1 => {
                Cow::Borrowed("Tango::DeviceProxy::write_attribute")
            }
            TangoCall::WriteAttributes { .. } => Cow::Borrowed("Tango::DeviceProxy::write_attributes"),
            TangoCall::WriteReadAttributes { written, read } if written.len() == 1 && read.len() <= 1 => {
                Cow::Borrowed("Tango::DeviceProxy::write_read_attribute")
            }
            TangoCall::WriteReadAttributes { .. } => Cow::Borrowed(
                "std::vector<Tango::DeviceAttribute>* Tango::DeviceProxy::write_read_attributes",
            ),
            TangoCall::CommandInout { .. } => Cow::Borrowed("Tango::Connection::command_inout"),
            TangoCall::SetAttributeConfig { .. } => Cow::Borrowed("Tango::DeviceProxy::set_attribute_config"),
            TangoCall::Pipe { .. } => Cow::Owned(format!("Tango::DeviceProxy::{base}")),
            TangoCall::Other => {
                let method = match base {
                    "_get_state" => "state",
                    "_get_status" => "status",
                    "_get_description" => "description",
                    "_get_name" => "name",
                    "_get_adm_name" => "adm_name",
                    "read_attribute_history" => "attribute_history",
                    "command_inout_history" => "command_history",
                    other => other,
                };
                match known_client_span_name(method) {
                    Some(name) => Cow::Borrowed(name),
                    None => Cow::Owned(format!("Tango::DeviceProxy::{method}")),
                }
            }
        }
    }
}

/// Server span names of the servant methods clients call most, spelled out so that naming a
/// span formats nothing; [`Operation::server_span_name`] formats any other.
fn known_server_span_name(giop: &str) -> Option<&'static str> {
    Some(match giop {
        "read_attributes_5" => "Tango::Device_5Impl::read_attributes_5",
        "read_attributes_4" => "Tango::Device_4Impl::read_attributes_4",
        "read_attributes_3" => "Tango::Device_3Impl::read_attributes_3",
        "read_attributes_2" => "Tango::Device_2Impl::read_attributes_2",
        "write_attributes_4" => "Tango::Device_4Impl::write_attributes_4",
        "write_attributes_3" => "Tango::Device_3Impl::write_attributes_3",
        "write_read_attributes_5" => "Tango::Device_5Impl::write_read_attributes_5",
        "write_read_attributes_4" => "Tango::Device_4Impl::write_read_attributes_4",
        "command_inout_4" => "Tango::Device_4Impl::command_inout_4",
        "command_inout_2" => "Tango::Device_2Impl::command_inout_2",
        "command_inout" => "Tango::DeviceImpl::command_inout",
        "ping" => "Tango::DeviceImpl::ping",
        "info" => "Tango::DeviceImpl::info",
        "info_3" => "Tango::Device_3Impl::info_3",
        "_get_state" => "Tango::DeviceImpl::state",
        "_get_status" => "Tango::DeviceImpl::status",
        _ => return None,
    })
}

/// Client span names of the DeviceProxy methods named after their GIOP operation that clients
/// call most, spelled out so that naming a span formats nothing.
fn known_client_span_name(method: &str) -> Option<&'static str> {
    Some(match method {
        "ping" => "Tango::DeviceProxy::ping",
        "info" => "Tango::DeviceProxy::info",
        "state" => "Tango::DeviceProxy::state",
        "status" => "Tango::DeviceProxy::status",
        "get_attribute_config" => "Tango::DeviceProxy::get_attribute_config",
        "command_list_query" => "Tango::DeviceProxy::command_list_query",
        "command_query" => "Tango::DeviceProxy::command_query",
        "black_box" => "Tango::DeviceProxy::black_box",
        _ => return None,
    })
}

/// A GIOP operation name as a call keeps it: Tango's own operations are borrowed from a table
/// (no allocation per call), any other is copied.
pub fn operation_name(giop: &str) -> Cow<'static, str> {
    match TANGO_OPERATIONS.iter().find(|known| **known == giop) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(giop.to_owned()),
    }
}

/// The operations of Tango's `Device_*` interfaces (IDL 6) and the CORBA ones clients send, most
/// frequent first.
const TANGO_OPERATIONS: &[&str] = &[
    "read_attributes_5",
    "command_inout_4",
    "write_attributes_4",
    "write_read_attributes_5",
    "ping",
    "_get_state",
    "_get_status",
    "read_attributes_4",
    "read_attributes_3",
    "read_attributes_2",
    "read_attributes",
    "command_inout_2",
    "command_inout",
    "write_attributes_3",
    "write_attributes",
    "write_read_attributes_4",
    "info",
    "info_3",
    "_get_name",
    "_get_description",
    "_get_adm_name",
    "_non_existent",
    "_is_a",
    "get_attribute_config_5",
    "get_attribute_config_3",
    "get_attribute_config_2",
    "get_attribute_config",
    "set_attribute_config_5",
    "set_attribute_config_4",
    "set_attribute_config_3",
    "set_attribute_config",
    "command_list_query_2",
    "command_list_query",
    "command_query_2",
    "command_query",
    "black_box",
    "read_attribute_history_5",
    "read_attribute_history_4",
    "read_attribute_history_3",
    "read_attribute_history_2",
    "command_inout_history_4",
    "command_inout_history_2",
    "read_pipe_5",
    "write_pipe_5",
    "write_read_pipe_5",
    "set_pipe_config_5",
    "get_pipe_config_5",
];

/// The admin-device command a client sends to subscribe to (or unsubscribe from) events.
pub const SUBSCRIPTION_COMMAND: &str = "ZmqEventSubscriptionChange";

/// Whether `call` is an event subscription (sent to an admin device).
pub fn is_subscription(call: &TangoCall) -> bool {
    matches!(call, TangoCall::CommandInout { command, .. } if command.eq_ignore_ascii_case(SUBSCRIPTION_COMMAND))
}

/// `ZmqEventSubscriptionChange [device, attribute, action, event type, …]` as span attributes.
pub fn subscription_attributes(call: &TangoCall) -> Vec<KeyValue> {
    let TangoCall::CommandInout { command, argin: Some(ArgValue::StringArray(args)) } = call else {
        return Vec::new();
    };
    if !command.eq_ignore_ascii_case(SUBSCRIPTION_COMMAND) {
        return Vec::new();
    }
    let mut attributes = Vec::new();
    let names = ["tango.event.device", "tango.event.attribute", "tango.event.action", "tango.event.type"];
    for (name, value) in names.iter().zip(args) {
        attributes.push(KeyValue::new(*name, value.to_ascii_lowercase()));
    }
    attributes
}

/// The `ClntIdent` of a request as span attributes, added to `attributes`.
pub fn add_client_ident_attributes(ident: &ClntIdent, attributes: &mut Vec<KeyValue>) {
    let lang = match ident.lang {
        LockerLanguage::Cpp | LockerLanguage::Cpp6 => "CPP",
        LockerLanguage::Java | LockerLanguage::Java6 => "JAVA",
        LockerLanguage::Unknown(_) => "UNKNOWN",
    };
    if let Some(pid) = ident.pid {
        attributes.push(KeyValue::new("tango.client_ident.pid", i64::from(pid)));
    }
    attributes.push(KeyValue::new("tango.client_ident.lang", lang));
    if let Some(class) = &ident.java_main_class {
        attributes.push(KeyValue::new("tango.client_ident.java_class", class.clone()));
    }
    if let Some(uuid) = ident.java_uuid {
        attributes.push(KeyValue::new(
            "tango.client_ident.java_ident",
            format!("{:016x}{:016x}", uuid[0], uuid[1]),
        ));
    }
}

/// Server span name, as cppTango 10.3 names its servant methods; its attributes go to `attributes`.
/// `argument`: the call's [`argument`], shared.
pub fn server_span(
    call: &TangoCall,
    argument: Option<&Arc<str>>,
    operation: &Operation<'_>,
    attributes: &mut Vec<KeyValue>,
) -> Cow<'static, str> {
    if let (TangoCall::CommandInout { .. }, Some(command)) = (call, argument) {
        attributes.push(KeyValue::new("tango.operation.argument", Value::from(Arc::clone(command))));
    }
    operation.server_span_name()
}

/// Client span name, as cppTango 10.3's DeviceProxy/Connection name them; its attributes go to
/// `attributes`. `argument`: the call's [`argument`], shared.
/// `tango.operation.target` is added by the resource resolution, which maps object keys to names.
/// `thread_id`: the calling thread's `thread.id`, formatted once per thread.
pub fn client_span(
    call: &TangoCall,
    argument: Option<&Arc<str>>,
    thread_id: Value,
    operation: &Operation<'_>,
    attributes: &mut Vec<KeyValue>,
) -> Cow<'static, str> {
    let name = operation.client_span_name(call);
    if let Some(argument) = argument {
        attributes.push(KeyValue::new("tango.operation.argument", Value::from(Arc::clone(argument))));
    }
    attributes.push(KeyValue::new("thread.id", thread_id));
    name
}

/// `tango.operation.argument` of a CLIENT span: the attribute, command or pipe name. SERVER
/// spans carry it for commands only.
pub fn argument(call: &TangoCall) -> Option<&str> {
    match call {
        TangoCall::ReadAttributes { names }
        | TangoCall::WriteAttributes { names }
        | TangoCall::SetAttributeConfig { names }
            if names.len() == 1 =>
        {
            names.first().map(String::as_str)
        }
        TangoCall::WriteReadAttributes { written, read } if written.len() == 1 && read.len() <= 1 => {
            written.first().map(String::as_str)
        }
        TangoCall::CommandInout { command, .. } => Some(command),
        TangoCall::Pipe { name } => Some(name),
        _ => None,
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

    fn op(giop: &str) -> Operation<'_> {
        Operation::classify(giop, b"test/demo/1", &TangoCall::Other)
    }

    #[test]
    fn server_names_follow_the_servant_class() {
        assert_eq!(op("read_attributes_5").server_span_name(), "Tango::Device_5Impl::read_attributes_5");
        assert_eq!(op("write_attributes_4").server_span_name(), "Tango::Device_4Impl::write_attributes_4");
        assert_eq!(op("command_inout_4").server_span_name(), "Tango::Device_4Impl::command_inout_4");
        assert_eq!(op("command_inout").server_span_name(), "Tango::DeviceImpl::command_inout");
        assert_eq!(op("_get_state").server_span_name(), "Tango::DeviceImpl::state");
    }

    #[test]
    fn spelled_out_names_are_the_formatted_ones() {
        for giop in [
            "read_attributes_5",
            "read_attributes_4",
            "read_attributes_3",
            "read_attributes_2",
            "write_attributes_4",
            "write_attributes_3",
            "write_read_attributes_5",
            "write_read_attributes_4",
            "command_inout_4",
            "command_inout_2",
            "command_inout",
            "ping",
            "info",
            "info_3",
            "_get_state",
            "_get_status",
        ] {
            let known = known_server_span_name(giop).unwrap();
            assert_eq!(known, op(giop).formatted_server_span_name(), "{giop}");
        }
        for giop in [
            "ping",
            "info",
            "info_3",
            "_get_state",
            "_get_status",
            "get_attribute_config_5",
            "command_list_query",
            "command_query",
            "black_box",
        ] {
            let name = op(giop).client_span_name(&TangoCall::Other);
            assert!(matches!(name, Cow::Borrowed(_)), "{giop}");
            let method = name.strip_prefix("Tango::DeviceProxy::").unwrap();
            assert!(giop.trim_start_matches("_get_").starts_with(method), "{giop} → {name}");
        }
    }

    #[test]
    fn client_names_follow_the_api_method() {
        let one = TangoCall::ReadAttributes { names: vec!["temperature".into()] };
        let two = TangoCall::ReadAttributes { names: vec!["a".into(), "b".into()] };
        let o = op("read_attributes_5");
        assert_eq!(o.client_span_name(&one), "Tango::DeviceProxy::read_attribute");
        assert_eq!(argument(&one), Some("temperature"));
        assert_eq!(
            o.client_span_name(&two),
            "std::vector<Tango::DeviceAttribute>* Tango::DeviceProxy::read_attributes"
        );
        assert_eq!(argument(&two), None);
        let cmd = TangoCall::CommandInout { command: "Echo".into(), argin: None };
        assert_eq!(op("command_inout_4").client_span_name(&cmd), "Tango::Connection::command_inout");
        assert_eq!(op("_get_state").client_span_name(&TangoCall::Other), "Tango::DeviceProxy::state");
    }

    #[test]
    fn classes() {
        let cmd = TangoCall::CommandInout { command: "DbImportDevice".into(), argin: None };
        assert_eq!(Operation::classify("command_inout", DATABASE_KEY, &cmd).class, OperationClass::Database);
        assert_eq!(Operation::classify("command_inout_4", b"x/y/z", &cmd).class, OperationClass::User);
        assert_eq!(op("ping").class, OperationClass::Extended);
        let info = Operation::classify("info", DATABASE_KEY, &TangoCall::Other);
        assert_eq!(
            info.class,
            OperationClass::Extended,
            "cppTango traces only command_inout on the database"
        );
        assert_eq!(op("_non_existent").class, OperationClass::Internal);
    }
}
