//! Decoding real captured Tango traffic (see `common` for where each fixture comes from).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, reason = "tests")]

mod common;

use common::{giop as fixture, reply, reply_body, request};
use tracer_wire::{
    giop::{self, CompletionStatus, Message, MsgType, ReplyStatus},
    tango::{
        self, ArgValue, LockerLanguage, TangoCall, parse_attributes_reply, parse_command_reply,
        parse_info_reply, parse_request, parse_system_exception, parse_user_exception,
    },
    zmtp,
};

/// PIDs of the capturing clients, as they appear in `ClntIdent`.
const DEMO_CLIENT_PID: u32 = 6158;
const TELE_CLIENT_PID: u32 = 6333;
const TT_CLIENT_PID: u32 = 10477;
const DB_CLIENT_PID: u32 = 9447;
const EXTRA_CLIENT_PID: u32 = 11891;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// `00-<32 hex>-<16 hex>-<2 hex>`.
fn is_w3c_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4 && parts[0] == "00" && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2)
}

#[test]
fn giop_1_0_request_header() {
    let bytes = fixture("demo-req-ping");
    let (h, _) = giop::parse_message(&bytes).expect("parse");
    assert_eq!((h.major, h.minor, h.little_endian), (1, 0, true));
    assert_eq!(h.msg_type, MsgType::Request);
    assert_eq!(h.message_len(), bytes.len());
    let r = request(&bytes);
    assert_eq!(r.request_id, 8);
    assert!(r.response_expected);
    assert_eq!(r.object_key, b"test/demo/1");
    assert_eq!(r.operation, "ping");
    assert!(r.body.is_empty());
    let rep_bytes = fixture("demo-rep-ping");
    let rep = reply(&rep_bytes);
    assert_eq!((rep.request_id, rep.status), (8, ReplyStatus::NoException));
}

#[test]
fn admin_device_object_key() {
    let r_bytes = fixture("admin-req-command_inout_4-querydevice");
    let r = request(&r_bytes);
    assert_eq!(r.object_key, b"dserver/demo/demo");
    assert_eq!(r.operation, "command_inout_4");
}

#[test]
fn read_attributes_5() {
    let bytes = fixture("demo-req-read_attributes_5-two");
    let r = request(&bytes);
    assert_eq!(r.operation, "read_attributes_5");
    let req = parse_request(r.operation, r.body);
    assert!(req.args_complete);
    assert_eq!(req.call, TangoCall::ReadAttributes { names: strings(&["temperature", "counter"]) });
    // Telemetry off: a 10.x client still sends CPP_6, with empty trace strings.
    let id = req.client_ident.expect("ClntIdent");
    assert_eq!(id.lang, LockerLanguage::Cpp6);
    assert_eq!(id.pid, Some(DEMO_CLIENT_PID));
    assert_eq!((id.trace_parent, id.trace_state), (None, None));

    let rep_bytes = fixture("demo-rep-read_attributes_5-two");
    let rep = reply(&rep_bytes);
    assert_eq!(rep.request_id, r.request_id);
    let values = parse_attributes_reply("read_attributes_5", rep.body).expect("values");
    let names: Vec<&str> = values.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["temperature", "counter"]);
    assert!(values.iter().all(|v| v.quality == 0 && v.errors.is_empty()));
    // DevDouble is 5, DevLong64 is 23.
    assert_eq!(values[0].data_type, Some(5));
    assert_eq!(values[1].data_type, Some(23));
}

#[test]
fn write_attributes_4() {
    for (name, expect, pid) in [
        ("demo-req-write_attributes_4", &["counter"][..], DEMO_CLIENT_PID),
        ("demo-req-write_attributes_4-two", &["counter", "temperature"][..], EXTRA_CLIENT_PID),
    ] {
        let bytes = fixture(name);
        let r = request(&bytes);
        let req = parse_request(r.operation, r.body);
        assert!(req.args_complete, "{name}");
        assert_eq!(req.call, TangoCall::WriteAttributes { names: strings(expect) }, "{name}");
        assert_eq!(req.client_ident.and_then(|c| c.pid), Some(pid), "{name}");
    }
}

#[test]
fn write_read_attributes_5() {
    let bytes = fixture("demo-req-write_read_attributes_5");
    let r = request(&bytes);
    let req = parse_request(r.operation, r.body);
    assert!(req.args_complete);
    assert_eq!(
        req.call,
        TangoCall::WriteReadAttributes { written: strings(&["counter"]), read: strings(&["counter"]) }
    );
    let rep = fixture("demo-rep-write_read_attributes_5");
    let values = parse_attributes_reply("write_read_attributes_5", reply_body(&rep)).expect("values");
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].name, "counter");

    let bytes = fixture("tt-req-write_read_attributes_5");
    let r = request(&bytes);
    let req = parse_request(r.operation, r.body);
    assert_eq!(
        req.call,
        TangoCall::WriteReadAttributes {
            written: strings(&["long_scalar_w"]),
            read: strings(&["long_scalar_w"]),
        }
    );
}

#[test]
fn set_attribute_config_5() {
    let bytes = fixture("demo-req-set_attribute_config_5");
    let r = request(&bytes);
    let req = parse_request(r.operation, r.body);
    assert!(req.args_complete);
    assert_eq!(req.call, TangoCall::SetAttributeConfig { names: strings(&["counter"]) });
    // The ClntIdent comes after the whole AttributeConfig_5: its pid proves the skip.
    assert_eq!(req.client_ident.and_then(|c| c.pid), Some(EXTRA_CLIENT_PID));
}

#[test]
fn command_inout_4_echo_and_reply() {
    let bytes = fixture("demo-req-command_inout_4-echo");
    let r = request(&bytes);
    let req = parse_request(r.operation, r.body);
    assert!(req.args_complete);
    assert_eq!(
        req.call,
        TangoCall::CommandInout { command: "Echo".into(), argin: Some(ArgValue::String("hi".into())) }
    );
    let rep = fixture("demo-rep-command_inout_4-echo");
    assert_eq!(parse_command_reply(reply_body(&rep)), Ok(ArgValue::String("hi".into())));
    let bytes = fixture("demo-req-command_inout_4-increment");
    let r = request(&bytes);
    let req = parse_request(r.operation, r.body);
    assert!(matches!(
        req.call,
        TangoCall::CommandInout { ref command, argin: Some(ArgValue::Void) } if command == "Increment"
    ));
    let rep = fixture("demo-rep-command_inout_4-increment");
    assert_eq!(parse_command_reply(reply_body(&rep)), Ok(ArgValue::Void));
}

#[test]
fn client_telemetry_sends_w3c_trace_parent() {
    for name in [
        "tele-req-command_inout_4-echo",
        "tele-req-read_attributes_5",
        "tele-req-write_attributes_4",
        "tele-req-command_inout_4-fail",
        "tele-req-command_inout_4-zmqeventsubscriptionchange",
        // The same kind of request, read on the server's side of the socket.
        "srv-recv-command_inout_4-echo",
        "srv-recv-read_attributes_5",
    ] {
        let bytes = fixture(name);
        let r = request(&bytes);
        let req = parse_request(r.operation, r.body);
        assert!(req.args_complete, "{name}");
        let id = req.client_ident.expect("ClntIdent");
        assert_eq!(id.lang, LockerLanguage::Cpp6, "{name}");
        assert_eq!(id.pid, Some(TELE_CLIENT_PID), "{name}");
        let tp = id.trace_parent.expect("trace_parent");
        assert!(is_w3c_traceparent(&tp), "{name}: {tp}");
        assert_eq!(id.trace_state, None, "{name}");
    }
    let bytes = fixture("tele-req-command_inout_4-echo");
    let r = request(&bytes);
    let req = parse_request(r.operation, r.body);
    assert_eq!(
        req.client_ident.and_then(|c| c.trace_parent).as_deref(),
        Some("00-48e5b89501073a4bf50f1d08d88d5709-9d365118ab436e18-03")
    );
}

#[test]
fn server_side_reply() {
    let bytes = fixture("srv-send-read_attributes_5");
    let rep = reply(&bytes);
    let values = parse_attributes_reply("read_attributes_5", rep.body).expect("values");
    assert_eq!(values[0].name, "temperature");
    let bytes = fixture("srv-send-command_inout_4-echo");
    assert_eq!(parse_command_reply(reply_body(&bytes)), Ok(ArgValue::String("traced".into())));
}

#[test]
fn event_subscription_command() {
    let bytes = fixture("tele-req-command_inout_4-zmqeventsubscriptionchange");
    let r = request(&bytes);
    assert_eq!(r.object_key, b"dserver/demo/demo");
    let req = parse_request(r.operation, r.body);
    assert_eq!(
        req.call,
        TangoCall::CommandInout {
            command: "ZmqEventSubscriptionChange".into(),
            argin: Some(ArgValue::StringArray(strings(&[
                "test/demo/1",
                "temperature",
                "subscribe",
                "change",
                "6"
            ]))),
        }
    );
    let rep = fixture("tele-rep-command_inout_4-zmqeventsubscriptionchange");
    let Ok(ArgValue::LongStringArray { longs, strings }) = parse_command_reply(reply_body(&rep)) else {
        panic!("not a DevVarLongStringArray");
    };
    assert!(!longs.is_empty());
    assert!(strings.iter().any(|s| s.starts_with("tcp://")), "{strings:?}");
    assert!(
        strings.iter().any(|s| s.starts_with("tango://") && s.ends_with("/temperature#dbase=no.idl5_change")),
        "{strings:?}"
    );
}

#[test]
fn admin_commands_with_array_arguments() {
    let rep = fixture("admin-rep-command_inout_4-querydevice");
    assert_eq!(
        parse_command_reply(reply_body(&rep)),
        Ok(ArgValue::StringArray(strings(&["Demo::test/demo/1"])))
    );
    let bytes = fixture("admin-req-command_inout_4-istelemetryenabled");
    let r = request(&bytes);
    let req = parse_request(r.operation, r.body);
    assert_eq!(
        req.call,
        TangoCall::CommandInout {
            command: "IsTelemetryEnabled".into(),
            argin: Some(ArgValue::StringArray(strings(&["test/demo/1"]))),
        }
    );
    let rep = fixture("admin-rep-command_inout_4-istelemetryenabled");
    assert_eq!(
        parse_command_reply(reply_body(&rep)),
        Ok(ArgValue::LongStringArray { longs: vec![0], strings: strings(&["test/demo/1"]) })
    );
    let bytes = fixture("admin-req-command_inout_4-settelemetrytracing");
    let r = request(&bytes);
    let req = parse_request(r.operation, r.body);
    assert!(req.args_complete);
    assert_eq!(
        req.call,
        TangoCall::CommandInout {
            command: "SetTelemetryTracing".into(),
            argin: Some(ArgValue::LongStringArray { longs: vec![0], strings: strings(&["test/demo/1"]) }),
        }
    );
    let rep = fixture("admin-rep-command_inout_4-stoptelemetry");
    assert_eq!(parse_command_reply(reply_body(&rep)), Ok(ArgValue::Void));
}

#[test]
fn devfailed_reply() {
    for name in ["demo-rep-devfailed", "giop12-rep-devfailed"] {
        let bytes = fixture(name);
        let rep = reply(&bytes);
        assert_eq!(rep.status, ReplyStatus::UserException, "{name}");
        let ex = parse_user_exception(rep.body).expect("DevFailed");
        assert!(ex.complete);
        assert_eq!(ex.repository_id, "IDL:Tango/DevFailed:1.0");
        assert_eq!(ex.errors.len(), 2);
        let first = &ex.errors[0];
        assert_eq!(first.reason, "Boom");
        assert_eq!(first.desc, "Failed on request");
        assert_eq!(first.origin, "Demo.Fail");
        assert_eq!(first.severity, 1);
        assert_eq!(ex.errors[1].reason, "PyDs_UnexpectedFailure");
    }
    let bytes = fixture("demo-req-command_inout_4-fail");
    let r = request(&bytes);
    let req = parse_request(r.operation, r.body);
    assert_eq!(
        req.call,
        TangoCall::CommandInout { command: "Fail".into(), argin: Some(ArgValue::String("Boom".into())) }
    );
}

#[test]
fn truncated_devfailed_keeps_first_error() {
    let bytes = fixture("demo-rep-devfailed");
    // Cut inside the second error.
    let ex = parse_user_exception(reply_body(&bytes[..120])).expect("DevFailed");
    assert!(!ex.complete);
    assert_eq!(ex.errors.len(), 1);
    assert_eq!(ex.errors[0].reason, "Boom");
}

#[test]
fn multi_dev_failed_reply() {
    let bytes = fixture("demo-rep-multidevfailed");
    let ex = parse_user_exception(reply_body(&bytes)).expect("MultiDevFailed");
    assert_eq!(ex.repository_id, "IDL:Tango/MultiDevFailed:1.0");
    assert_eq!(ex.failed_names, strings(&["temperature"]));
    assert!(!ex.errors.is_empty());
}

#[test]
fn system_exception_reply() {
    let bytes = fixture("nodev-req-_is_a");
    assert_eq!(request(&bytes).object_key, b"test/demo/99");
    let bytes = fixture("nodev-rep-object_not_exist");
    let rep = reply(&bytes);
    assert_eq!(rep.status, ReplyStatus::SystemException);
    let ex = parse_system_exception(rep.body).expect("system exception");
    assert_eq!(ex.repository_id, "IDL:omg.org/CORBA/OBJECT_NOT_EXIST:1.0");
    assert_eq!(ex.name(), "OBJECT_NOT_EXIST");
    // omniORB's OBJECT_NOT_EXIST_NoMatch.
    assert_eq!(ex.minor, 0x4f4d_0001);
    assert_eq!(ex.completed, CompletionStatus::No);
}

#[test]
fn info_replies() {
    let bytes = fixture("demo-rep-info");
    let info = parse_info_reply("info", reply_body(&bytes)).expect("info");
    assert_eq!(info.dev_class, "Demo");
    assert_eq!(info.server_id, "Demo/Demo");
    assert_eq!(info.server_version, 6);
    assert!(info.doc_url.starts_with("Doc URL = "));
    assert_eq!(info.dev_type, "");

    for name in ["demo-rep-info_6", "giop12-rep-info_6"] {
        let bytes = fixture(name);
        let info = parse_info_reply("info_6", reply_body(&bytes)).expect("info_6");
        assert_eq!(info.dev_class, "Demo", "{name}");
        assert_eq!(info.dev_type, "Demo", "{name}");
        assert!(info.version_info.contains(&("cppTango".to_owned(), "10.3.3".to_owned())));
        assert!(info.version_info.contains(&("idl".to_owned(), "6.0.4".to_owned())));
    }

    let bytes = fixture("tt-rep-info_3");
    let info = parse_info_reply("info_3", reply_body(&bytes)).expect("info_3");
    assert_eq!(info.dev_class, "TangoTest");
    assert_eq!(info.server_id, "TangoTest/test");
    assert_eq!(info.server_version, 5);
    // TangoTest 9.3.4 never sets its device type.
    assert_eq!(info.dev_type, "Uninitialised");
}

#[test]
fn get_state_reply() {
    let bytes = fixture("demo-rep-_get_state");
    let mut body = reply_body(&bytes);
    // DevState UNKNOWN.
    assert_eq!(body.u32(), Ok(13));
}

#[test]
fn giop_1_2_requests() {
    let bytes = fixture("giop12-req-command_inout_4-echo");
    let (h, _) = giop::parse_message(&bytes).expect("parse");
    assert_eq!((h.major, h.minor), (1, 2));
    let r = request(&bytes);
    assert_eq!(r.request_id, 10);
    // A database-exported servant: a transient RootPOA key, not the device name.
    assert_eq!(r.object_key.len(), 14);
    assert_eq!(r.object_key.first(), Some(&0xfe));
    // The body starts 8-aligned from the message start.
    assert_eq!(r.body.offset() % 8, 0);
    let req = parse_request(r.operation, r.body);
    assert!(req.args_complete);
    assert_eq!(
        req.call,
        TangoCall::CommandInout { command: "Echo".into(), argin: Some(ArgValue::String("over-db".into())) }
    );
    assert_eq!(req.client_ident.and_then(|c| c.pid), Some(DB_CLIENT_PID));
    let rep = fixture("giop12-rep-command_inout_4-echo");
    let rep = reply(&rep);
    assert_eq!(rep.request_id, 10);
    assert_eq!(parse_command_reply(rep.body), Ok(ArgValue::String("over-db".into())));

    let bytes = fixture("giop12-req-read_attributes_5");
    let r = request(&bytes);
    let req = parse_request(r.operation, r.body);
    assert_eq!(req.call, TangoCall::ReadAttributes { names: strings(&["temperature"]) });
    let bytes = fixture("giop12-rep-read_attributes_5");
    let values = parse_attributes_reply("read_attributes_5", reply_body(&bytes)).expect("values");
    assert_eq!(values[0].name, "temperature");

    // The first request on a connection carries the codeset service context.
    let bytes = fixture("giop12-req-_non_existent");
    let r = request(&bytes);
    assert_eq!(r.operation, "_non_existent");
    assert!(r.body.is_empty());
    let bytes = fixture("giop12-rep-_non_existent");
    let mut body = reply_body(&bytes);
    assert_eq!(body.bool(), Ok(false));
}

#[test]
fn database_import_device() {
    let bytes = fixture("dbclient-req-command_inout_4-dbimportdevice");
    let r = request(&bytes);
    assert_eq!(r.object_key, b"database");
    let req = parse_request(r.operation, r.body);
    assert_eq!(
        req.call,
        TangoCall::CommandInout {
            command: "DbImportDevice".into(),
            argin: Some(ArgValue::String("test/dbdemo/1".into())),
        }
    );
    let rep = fixture("dbclient-rep-command_inout_4-dbimportdevice");
    let Ok(ArgValue::LongStringArray { longs, strings }) = parse_command_reply(reply_body(&rep)) else {
        panic!("not a DevVarLongStringArray");
    };
    assert_eq!(strings.first().map(String::as_str), Some("test/dbdemo/1"));
    assert!(strings.get(1).is_some_and(|ior| ior.starts_with("IOR:")));
    assert_eq!(strings.get(3).map(String::as_str), Some("Demo/Demo"));
    assert_eq!(longs.len(), 2);
}

#[test]
fn tangotest_command_types() {
    let cases: [(&str, ArgValue); 14] = [
        ("devboolean", ArgValue::Bool(true)),
        ("devshort", ArgValue::Long(-5)),
        ("devlong", ArgValue::Long(-123_456)),
        ("devulong", ArgValue::ULong(123_456)),
        ("devlong64", ArgValue::Long(-(1 << 40))),
        ("devulong64", ArgValue::ULong(1 << 41)),
        ("devfloat", ArgValue::Double(1.5)),
        ("devdouble", ArgValue::Double(2.25)),
        ("devstring", ArgValue::String("tt".into())),
        ("devvarstringarray", ArgValue::StringArray(strings(&["a", "bc"]))),
        (
            "devvarlongstringarray",
            ArgValue::LongStringArray { longs: vec![1, -2], strings: strings(&["x", "yz"]) },
        ),
        (
            "devvardoublestringarray",
            ArgValue::DoubleStringArray { doubles: vec![1.5, -2.5], strings: strings(&["d"]) },
        ),
        ("devvardoublearray", ArgValue::DoubleArray(vec![0.5, 1.0])),
        ("devvoid", ArgValue::Void),
    ];
    for (cmd, value) in cases {
        let bytes = fixture(&format!("tt-req-command_inout_4-{cmd}"));
        let r = request(&bytes);
        assert_eq!(r.object_key, b"sys/tg_test/1");
        let req = parse_request(r.operation, r.body);
        assert!(req.args_complete, "{cmd}");
        let TangoCall::CommandInout { command, argin } = req.call else {
            panic!("{cmd}: not a command");
        };
        assert_eq!(command.to_lowercase(), cmd);
        assert_eq!(argin.as_ref(), Some(&value), "{cmd} argin");
        // TangoTest 9.3.4 is an IDL-5 server: the 10.x client sends a plain CPP ClntIdent.
        let id = req.client_ident.expect("ClntIdent");
        assert_eq!((id.lang, id.pid), (LockerLanguage::Cpp, Some(TT_CLIENT_PID)));
        assert_eq!(id.trace_parent, None);

        let rep = fixture(&format!("tt-rep-command_inout_4-{cmd}"));
        assert_eq!(parse_command_reply(reply_body(&rep)), Ok(value), "{cmd} reply");
    }
    let rep = fixture("tt-rep-command_inout_4-state");
    assert_eq!(
        parse_command_reply(reply_body(&rep)),
        Ok(ArgValue::Enum {
            type_id: "IDL:Tango/DevState:1.0".into(),
            value: 10,
            label: Some("RUNNING".into()),
        })
    );
}

#[test]
fn tangotest_read_reply() {
    let bytes = fixture("tt-req-read_attributes_5");
    let r = request(&bytes);
    let req = parse_request(r.operation, r.body);
    assert_eq!(req.call, TangoCall::ReadAttributes { names: strings(&["double_scalar", "long_scalar"]) });
    let bytes = fixture("tt-rep-read_attributes_5");
    let values = parse_attributes_reply("read_attributes_5", reply_body(&bytes)).expect("values");
    let names: Vec<&str> = values.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["double_scalar", "long_scalar"]);
}

#[test]
fn every_fixture_parses_whole() {
    for (name, bytes) in common::all_giop() {
        let (h, msg) = giop::parse_message(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(h.message_len(), bytes.len(), "{name}");
        match msg {
            Message::Request(r) => {
                assert!(name.contains("-req-") || name.starts_with("srv-recv"), "{name}");
                let req = parse_request(r.operation, r.body);
                assert!(req.args_complete, "{name}");
            }
            Message::Reply(r) => {
                assert!(name.contains("-rep-") || name.starts_with("srv-send"), "{name}");
                assert!(
                    r.body.remaining() > 0 || name.ends_with("ping") || name.contains("write_attributes"),
                    "{name}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn zmq_event_messages() {
    // One send of the server's event socket carried two whole event messages.
    let bytes = common::zmtp("srv-send-event-temperature-x2");
    let (messages, rest) = zmtp::split_messages(&bytes).expect("frames");
    assert!(rest.is_empty());
    assert_eq!(messages.len(), 2);
    for frames in &messages {
        let ev = zmtp::parse_event(frames).expect("event");
        assert_eq!(ev.topic, "tango://vm:45871/test/demo/1/temperature#dbase=no.idl5_change");
        assert!(ev.little_endian);
        assert_eq!(ev.call_info.version, 1);
        assert_eq!(ev.call_info.ctr, 1);
        assert!(!ev.call_info.call_is_except);
        assert!(ev.data.starts_with(&zmtp::VALUE_MARKER));
        let topic = zmtp::parse_topic(ev.topic).expect("topic");
        assert_eq!((topic.device, topic.attribute), ("test/demo/1", Some("temperature")));
        let value = tango::parse_attribute_value_5(&mut ev.value_reader()).expect("value");
        assert_eq!(value.name, "temperature");
        assert_eq!(value.data_type, Some(5));
    }
    // The client received the same bytes.
    assert_eq!(common::zmtp("client-recv-event-temperature"), bytes);
}

#[test]
fn zmq_greeting_and_subscribe() {
    let bytes = common::zmtp("client-send-greeting");
    assert!(zmtp::check_payload(&bytes));
    let (g, rest) = zmtp::parse_greeting(&bytes).expect("greeting");
    assert_eq!((g.major, g.minor, g.mechanism), (3, 1, "NULL"));
    assert!(rest.is_empty());
    assert_eq!(zmtp::parse_greeting(&bytes[..10]).err(), Some(tracer_wire::WireError::Incomplete));

    let bytes = common::zmtp("client-send-subscribe");
    let (frame, rest) = zmtp::parse_frame(&bytes).expect("frame");
    assert!(rest.is_empty());
    let cmd = frame.as_command().expect("command");
    assert_eq!(cmd.name, "SUBSCRIBE");
    assert_eq!(cmd.data, b"tango://vm:45871/test/demo/1/temperature#dbase=no.idl5_change");
}
