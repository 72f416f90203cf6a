//! The daemon's own small, read-only Tango database client.
//!
//! Servers that were running before the daemon started registered their devices when it could not
//! see them; their requests carry opaque POA keys. The database knows which key is which device:
//! `DbGetDeviceExportedList("*")`, then `DbImportDevice(name)` for each device, whose IOR holds the
//! key. Only these two queries are ever sent.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tracer_wire::{
    encode,
    giop::{self, Message, ReplyStatus},
    ior::parse_ior,
    tango::{self, ArgValue},
};

use crate::assemble::{DeviceFacts, naming::DATABASE_KEY};

const TIMEOUT: Duration = Duration::from_secs(3);
/// Replies larger than this are refused (a database answers in kilobytes).
const MAX_REPLY: usize = 16 * 1024 * 1024;

/// Why a database query failed.
#[derive(Debug, thiserror::Error)]
pub enum DbClientError {
    #[error("TANGO_HOST {0:?} names no host:port")]
    BadTangoHost(String),
    #[error("cannot reach the Tango database at {host}")]
    Connect {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the Tango database failed")]
    Io(#[from] std::io::Error),
    #[error("the Tango database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the Tango database sent a reply that cannot be read: {0}")]
    BadReply(&'static str),
    #[error("the Tango database refused {command}")]
    Refused { command: &'static str },
}

/// What one import found: device facts by object key.
#[derive(Debug, Default)]
pub struct Import {
    pub devices: Vec<(Vec<u8>, DeviceFacts)>,
    /// The `telemetry_*` properties of each device, as the database holds them now.
    pub properties: Vec<(String, crate::assemble::Properties)>,
}

/// The device properties cppTango reads its telemetry configuration from.
pub const TELEMETRY_PROPERTIES: &[&str] = &[
    "telemetry_enable",
    "telemetry_types",
    "telemetry_topics",
    "telemetry_tracing_exporters",
    "telemetry_tracing_endpoints",
    "telemetry_logging_exporters",
    "telemetry_logging_endpoints",
];

/// `host:port[,host:port…]` → socket addresses to try in order.
pub fn parse_tango_host(tango_host: &str) -> Result<Vec<String>, DbClientError> {
    let hosts: Vec<String> = tango_host
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| if h.contains(':') { h.to_string() } else { format!("{h}:10000") })
        .collect();
    if hosts.is_empty() {
        return Err(DbClientError::BadTangoHost(tango_host.to_string()));
    }
    Ok(hosts)
}

/// A connection to one database server.
pub struct DbConnection {
    stream: TcpStream,
    next_id: u32,
}

impl DbConnection {
    /// Connects to the first database of `TANGO_HOST` that answers.
    pub async fn connect(tango_host: &str) -> Result<DbConnection, DbClientError> {
        let mut last = None;
        for host in parse_tango_host(tango_host)? {
            match tokio::time::timeout(TIMEOUT, TcpStream::connect(&host)).await {
                Ok(Ok(stream)) => return Ok(DbConnection { stream, next_id: 1 }),
                Ok(Err(source)) => last = Some(DbClientError::Connect { host, source }),
                Err(_) => last = Some(DbClientError::Timeout(TIMEOUT)),
            }
        }
        Err(last.unwrap_or_else(|| DbClientError::BadTangoHost(tango_host.to_string())))
    }

    /// Our end of the connection, so the daemon can leave its own queries untraced.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.local_addr().ok()
    }

    /// `command_inout(command, any string)` on the database object.
    pub async fn command(&mut self, command: &'static str, argin: &str) -> Result<ArgValue, DbClientError> {
        self.command_with(command, |w| w.any_string(argin)).await
    }

    /// `command_inout(command, any DevVarStringArray)` on the database object.
    pub async fn command_strings(
        &mut self,
        command: &'static str,
        argin: &[&str],
    ) -> Result<ArgValue, DbClientError> {
        self.command_with(command, |w| w.any_string_seq(argin)).await
    }

    async fn command_with(
        &mut self,
        command: &'static str,
        argin: impl FnOnce(&mut encode::CdrWriter),
    ) -> Result<ArgValue, DbClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let request = encode::request_1_0(id, DATABASE_KEY, "command_inout", |w| {
            w.string(command);
            argin(w);
        });
        tokio::time::timeout(TIMEOUT, self.exchange(&request, id, command))
            .await
            .map_err(|_| DbClientError::Timeout(TIMEOUT))?
    }

    async fn exchange(
        &mut self,
        request: &[u8],
        id: u32,
        command: &'static str,
    ) -> Result<ArgValue, DbClientError> {
        self.stream.write_all(request).await?;
        loop {
            let mut header = [0u8; giop::HEADER_LEN];
            self.stream.read_exact(&mut header).await?;
            let parsed = giop::parse_header(&header).map_err(|_| DbClientError::BadReply("GIOP header"))?;
            let body_len = parsed.body_len as usize;
            if body_len > MAX_REPLY {
                return Err(DbClientError::BadReply("reply too large"));
            }
            let mut message = header.to_vec();
            message.resize(giop::HEADER_LEN + body_len, 0);
            if let Some(body) = message.get_mut(giop::HEADER_LEN..) {
                self.stream.read_exact(body).await?;
            }
            let Ok((_, Message::Reply(reply))) = giop::parse_message(&message) else {
                continue;
            };
            if reply.request_id != id {
                continue;
            }
            if reply.status != ReplyStatus::NoException {
                return Err(DbClientError::Refused { command });
            }
            return tango::parse_command_reply(reply.body)
                .map_err(|_| DbClientError::BadReply("command reply"));
        }
    }
}

/// The telemetry properties of one device.
pub async fn device_properties(
    tango_host: &str,
    device: &str,
    on_connect: impl FnOnce(Option<SocketAddr>),
) -> Result<crate::assemble::Properties, DbClientError> {
    let mut db = DbConnection::connect(tango_host).await?;
    on_connect(db.local_addr());
    let mut query = vec![device];
    query.extend_from_slice(TELEMETRY_PROPERTIES);
    match db.command_strings("DbGetDeviceProperty", &query).await? {
        ArgValue::StringArray(answer) => crate::assemble::parse_property_answer(&answer)
            .map(|(_, properties)| properties)
            .ok_or(DbClientError::BadReply("DbGetDeviceProperty answer")),
        _ => Err(DbClientError::BadReply("DbGetDeviceProperty answers a string array")),
    }
}

/// Imports the object keys of every exported device of the database at `tango_host`.
/// `on_connect` is told our local address before the first query is sent.
pub async fn import_exported(
    tango_host: &str,
    on_connect: impl FnOnce(Option<SocketAddr>),
) -> Result<Import, DbClientError> {
    let mut db = DbConnection::connect(tango_host).await?;
    on_connect(db.local_addr());
    let names = match db.command("DbGetDeviceExportedList", "*").await? {
        ArgValue::StringArray(names) => names,
        _ => return Err(DbClientError::BadReply("DbGetDeviceExportedList answers a string array")),
    };
    let mut import = Import::default();
    for name in names {
        let Ok(ArgValue::LongStringArray { strings, .. }) = db.command("DbImportDevice", &name).await else {
            continue;
        };
        let mut query = vec![name.as_str()];
        query.extend_from_slice(TELEMETRY_PROPERTIES);
        if let Ok(ArgValue::StringArray(answer)) = db.command_strings("DbGetDeviceProperty", &query).await
            && let Some(properties) = crate::assemble::parse_property_answer(&answer)
        {
            import.properties.push(properties);
        }
        if let [name, ior, _version, server, _host, class, ..] = strings.as_slice()
            && let Ok(ior) = parse_ior(ior)
        {
            import.devices.push((
                ior.object_key,
                DeviceFacts {
                    name: Some(name.to_ascii_lowercase()),
                    dev_class: Some(class.clone()),
                    server_id: Some(server.clone()),
                },
            ));
        }
    }
    Ok(import)
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
    fn tango_host_forms() {
        assert_eq!(parse_tango_host("db:10000").ok(), Some(vec!["db:10000".to_string()]));
        assert_eq!(parse_tango_host("a:1, b").ok(), Some(vec!["a:1".to_string(), "b:10000".to_string()]));
        assert!(parse_tango_host(" , ").is_err());
    }
}
