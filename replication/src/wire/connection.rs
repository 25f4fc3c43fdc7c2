//! Startup, authentication and replication commands.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{self, sasl};
use postgres_protocol::message::backend::{
    AuthenticationSaslBody, DataRowBody, Message, ParameterStatusBody, RowDescriptionBody,
};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::framing::{Backend, Framed, Transport, log_notice, server_error, unexpected};
use super::lsn::{Lsn, format_lsn, parse_lsn};
use super::stream::ReplicationStream;
use super::{ReplicationConfig, Target, WireError};

/// The output plugin whose messages `pgoutput` (this crate's decoder) understands.
const OUTPUT_PLUGIN: &str = "pgoutput";

/// A connection in logical replication mode (`replication=database`): it accepts replication
/// commands and plain SQL, and turns into a [`ReplicationStream`] with
/// [`start_logical_replication`](Self::start_logical_replication).
///
/// Commands run one at a time (`&mut self`); dropping the connection closes the socket, which
/// also drops any temporary slot it created.
pub struct ReplicationConnection {
    pub(crate) framed: Framed,
    parameters: HashMap<String, String>,
    /// Process id and the secret a cancel request needs.
    backend_key: Option<(i32, i32)>,
}

impl std::fmt::Debug for ReplicationConnection {
    // The cancel secret is a credential: anyone holding it can cancel our commands.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationConnection")
            .field("framed", &self.framed)
            .field("backend_pid", &self.backend_pid())
            .field("parameters", &self.parameters)
            .finish()
    }
}

/// The answer to `IDENTIFY_SYSTEM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemId {
    /// The cluster's system identifier (a 64-bit number, kept as the server prints it).
    pub systemid: String,
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database the connection is bound to (`None` only on physical replication connections).
    pub dbname: Option<String>,
}

/// What `CREATE_REPLICATION_SLOT` does with the snapshot at the slot's consistent point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Export it for `SET TRANSACTION SNAPSHOT` in other sessions, e.g. to copy the initial
    /// table contents exactly as of the slot's start. The snapshot stays importable only until
    /// the next command on this replication connection (or its end).
    Export,
    /// Use it in the current transaction of this connection, which must have been opened with
    /// `BEGIN ISOLATION LEVEL REPEATABLE READ` before creating the slot.
    Use,
    /// Neither: cheapest when no initial copy is needed.
    NoExport,
}

impl SnapshotAction {
    fn keyword(self) -> &'static str {
        match self {
            SnapshotAction::Export => "export",
            SnapshotAction::Use => "use",
            SnapshotAction::NoExport => "nothing",
        }
    }
}

/// The answer to `CREATE_REPLICATION_SLOT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    pub slot_name: String,
    /// Where streaming from this slot starts: every transaction committing after this point is
    /// sent, everything before it is in the snapshot.
    pub consistent_point: Lsn,
    /// Set with [`SnapshotAction::Export`].
    pub snapshot_name: Option<String>,
    pub output_plugin: String,
}

/// One row of a simple query's result, every value in text form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    columns: Arc<[String]>,
    values: Vec<Option<String>>,
}

impl Row {
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Values in column order; `None` is SQL NULL.
    pub fn values(&self) -> &[Option<String>] {
        &self.values
    }

    pub fn into_values(self) -> Vec<Option<String>> {
        self.values
    }

    /// The value of the first column named `column`; `None` when it is NULL or there is no
    /// such column (see [`Row::columns`] to tell them apart).
    pub fn get(&self, column: &str) -> Option<&str> {
        let index = self.columns.iter().position(|c| c == column)?;
        self.get_index(index)
    }

    pub fn get_index(&self, index: usize) -> Option<&str> {
        self.values.get(index)?.as_deref()
    }

    fn decode(columns: Arc<[String]>, body: &DataRowBody) -> Result<Row, WireError> {
        let buffer = body.buffer();
        let mut values = Vec::with_capacity(columns.len());
        let mut ranges = body.ranges();
        while let Some(range) = ranges
            .next()
            .map_err(|e| WireError::Protocol(format!("malformed DataRow: {e}")))?
        {
            let value = match range {
                None => None,
                Some(range) => {
                    let bytes = buffer.get(range).ok_or_else(|| {
                        WireError::Protocol("DataRow value runs past the message".into())
                    })?;
                    // client_encoding=UTF8 is part of the startup message, so text values are
                    // UTF-8 unless the server misbehaves.
                    let text = std::str::from_utf8(bytes).map_err(|e| {
                        WireError::Protocol(format!("DataRow value is not UTF-8: {e}"))
                    })?;
                    Some(text.to_string())
                }
            };
            values.push(value);
        }
        if values.len() != columns.len() {
            return Err(WireError::Protocol(format!(
                "DataRow has {} values for {} columns",
                values.len(),
                columns.len()
            )));
        }
        Ok(Row { columns, values })
    }
}

impl ReplicationConnection {
    /// Connects to the first target of `config` that accepts, authenticates and waits until the
    /// server is ready for commands.
    ///
    /// Authentication: trust, cleartext password, MD5 and SCRAM-SHA-256 (without channel
    /// binding). A cleartext password crosses the socket as is, so in plaintext unless TLS is on.
    pub async fn connect(config: &ReplicationConfig) -> Result<Self, WireError> {
        let mut last_error = None;
        for target in config.targets() {
            match Self::connect_to(config, target).await {
                Ok(connection) => return Ok(connection),
                Err(e) => {
                    tracing::debug!(%target, error = %e, "replication connection attempt failed");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| WireError::Config("no host to connect to".into())))
    }

    async fn connect_to(config: &ReplicationConfig, target: &Target) -> Result<Self, WireError> {
        let transport = open(target, config.connect_timeout()).await?;
        let transport = match (transport, config.connector(), target) {
            (Transport::Tcp(socket), Some(connector), Target::Tcp { host, .. }) => {
                negotiate_tls(socket, connector, host).await?
            }
            // Plaintext by choice (sslmode=disable), or a Unix socket, which has no TLS.
            (transport, _, _) => transport,
        };
        Self::handshake(Framed::new(transport), config).await
    }

    /// Startup and authentication over an already open socket.
    pub(crate) async fn handshake(
        mut framed: Framed,
        config: &ReplicationConfig,
    ) -> Result<Self, WireError> {
        let mut params = vec![
            ("user", config.user()),
            ("database", config.dbname()),
            // "database" (not "true") makes a logical replication connection bound to one
            // database, which also accepts SQL.
            ("replication", "database"),
            ("application_name", config.application_name()),
            // Row values are handed out as Rust strings.
            ("client_encoding", "UTF8"),
        ];
        if let Some(options) = config.options() {
            params.push(("options", options));
        }
        framed
            .send(|buf| frontend::startup_message(params.iter().copied(), buf))
            .await?;
        authenticate(&mut framed, config).await?;
        let mut connection = ReplicationConnection {
            framed,
            parameters: HashMap::new(),
            backend_key: None,
        };
        connection.await_ready().await?;
        Ok(connection)
    }

    async fn await_ready(&mut self) -> Result<(), WireError> {
        const EXPECTED: &str = "ReadyForQuery after authentication";
        loop {
            match self.framed.recv_expected(EXPECTED).await? {
                Backend::Message(Message::ParameterStatus(body)) => self.record_parameter(&body)?,
                Backend::Message(Message::BackendKeyData(body)) => {
                    self.backend_key = Some((body.process_id(), body.secret_key()));
                }
                Backend::Message(Message::NoticeResponse(body)) => log_notice(body.fields()),
                Backend::Message(Message::ReadyForQuery(_)) => return Ok(()),
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(server_error(body.fields()));
                }
                other => return Err(unexpected(&other, EXPECTED)),
            }
        }
    }

    pub(crate) fn record_parameter(&mut self, body: &ParameterStatusBody) -> Result<(), WireError> {
        let malformed =
            |e: io::Error| WireError::Protocol(format!("malformed ParameterStatus: {e}"));
        let name = body.name().map_err(malformed)?;
        let value = body.value().map_err(malformed)?;
        self.parameters.insert(name.to_string(), value.to_string());
        Ok(())
    }

    /// A run-time parameter the server reported (`server_version`, `server_encoding`, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }

    pub fn parameters(&self) -> &HashMap<String, String> {
        &self.parameters
    }

    /// The process id of the server's walsender, as in `pg_stat_replication.pid`.
    pub fn backend_pid(&self) -> Option<i32> {
        self.backend_key.map(|(pid, _)| pid)
    }

    /// Runs `sql` with the simple query protocol: a replication command, or SQL.
    ///
    /// Every value comes back as text. Several statements separated by `;` give their rows one
    /// after another (each [`Row`] knows its own columns). A server error is returned after the
    /// server is ready again, so the connection stays usable. Commands that start a COPY
    /// (`START_REPLICATION`, `COPY`) are refused with a protocol error that leaves the connection
    /// unusable: use [`start_logical_replication`](Self::start_logical_replication).
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Row>, WireError> {
        const EXPECTED: &str = "the result of a query";
        self.framed.send(|buf| frontend::query(sql, buf)).await?;
        let mut rows = Vec::new();
        let mut columns: Option<Arc<[String]>> = None;
        let mut failure = None;
        loop {
            let message = match self.framed.recv_expected(EXPECTED).await? {
                Backend::Message(message) => message,
                Backend::CopyBothResponse => return Err(copy_refused("CopyBothResponse")),
            };
            match message {
                Message::RowDescription(body) => columns = Some(column_names(&body)?),
                Message::DataRow(body) => {
                    let columns = columns.clone().ok_or_else(|| {
                        WireError::Protocol("DataRow without a RowDescription".into())
                    })?;
                    rows.push(Row::decode(columns, &body)?);
                }
                Message::CommandComplete(_) | Message::EmptyQueryResponse => columns = None,
                Message::NoticeResponse(body) => log_notice(body.fields()),
                Message::ParameterStatus(body) => self.record_parameter(&body)?,
                Message::ErrorResponse(body) => failure = Some(server_error(body.fields())),
                Message::ReadyForQuery(_) => {
                    return match failure {
                        Some(e) => Err(e),
                        None => Ok(rows),
                    };
                }
                Message::CopyInResponse(_) => return Err(copy_refused("CopyInResponse")),
                Message::CopyOutResponse(_) => return Err(copy_refused("CopyOutResponse")),
                other => return Err(unexpected(&Backend::Message(other), EXPECTED)),
            }
        }
    }

    /// `IDENTIFY_SYSTEM`: the cluster's identity and current WAL position.
    pub async fn identify_system(&mut self) -> Result<SystemId, WireError> {
        const COMMAND: &str = "IDENTIFY_SYSTEM";
        let row = single_row(self.simple_query(COMMAND).await?, COMMAND)?;
        let timeline = required(&row, "timeline", COMMAND)?;
        Ok(SystemId {
            systemid: required(&row, "systemid", COMMAND)?.to_string(),
            timeline: timeline.parse().map_err(|_| {
                WireError::Protocol(format!("{COMMAND} returned timeline {timeline:?}"))
            })?,
            xlogpos: parse_lsn(required(&row, "xlogpos", COMMAND)?)?,
            dbname: row.get("dbname").map(str::to_string),
        })
    }

    /// `CREATE_REPLICATION_SLOT name [TEMPORARY] LOGICAL pgoutput (SNAPSHOT ...)` (PostgreSQL 15
    /// syntax).
    ///
    /// A temporary slot lives as long as this connection, so it suits a stream started on the
    /// same connection; a permanent one survives restarts and must be dropped
    /// ([`drop_slot`](Self::drop_slot)) when no longer wanted, or the server keeps WAL for it
    /// forever.
    pub async fn create_logical_slot(
        &mut self,
        name: &str,
        temporary: bool,
        snapshot: SnapshotAction,
    ) -> Result<CreatedSlot, WireError> {
        const COMMAND: &str = "CREATE_REPLICATION_SLOT";
        let sql = format!(
            "{COMMAND} {} {}LOGICAL {OUTPUT_PLUGIN} (SNAPSHOT '{}')",
            quote_identifier(name),
            if temporary { "TEMPORARY " } else { "" },
            snapshot.keyword()
        );
        let row = single_row(self.simple_query(&sql).await?, COMMAND)?;
        Ok(CreatedSlot {
            slot_name: required(&row, "slot_name", COMMAND)?.to_string(),
            consistent_point: parse_lsn(required(&row, "consistent_point", COMMAND)?)?,
            snapshot_name: row.get("snapshot_name").map(str::to_string),
            output_plugin: required(&row, "output_plugin", COMMAND)?.to_string(),
        })
    }

    /// `DROP_REPLICATION_SLOT name [WAIT]`; with `wait`, a slot still in use by another
    /// connection is waited for instead of failing with SQLSTATE 55006.
    pub async fn drop_slot(&mut self, name: &str, wait: bool) -> Result<(), WireError> {
        let sql = format!(
            "DROP_REPLICATION_SLOT {}{}",
            quote_identifier(name),
            if wait { " WAIT" } else { "" }
        );
        self.simple_query(&sql).await.map(drop)
    }

    /// `START_REPLICATION SLOT slot LOGICAL start_lsn (options)`, then waits for the server to
    /// switch to CopyBoth mode.
    ///
    /// `options` go to the output plugin; for pgoutput e.g. `("proto_version", "2")`,
    /// `("publication_names", &publication_names_option(&["orders"]))`, `("streaming", "on")`,
    /// `("messages", "true")`. Names and values are quoted here. The server starts at the slot's
    /// confirmed position if `start_lsn` is older than it (`0` means "where the slot is").
    ///
    /// Start logical replication once per connection: PostgreSQL 15 does not reset its copy
    /// state between logical `START_REPLICATION` commands, so a second one on the same
    /// connection ends at once (its stream yields `None`). [`ReplicationStream::stop`] gives the
    /// connection back for other commands (e.g. dropping the slot); to resume, connect again.
    pub async fn start_logical_replication(
        mut self,
        slot: &str,
        start_lsn: Lsn,
        options: &[(&str, &str)],
    ) -> Result<ReplicationStream, WireError> {
        const EXPECTED: &str = "CopyBothResponse";
        let command = start_replication_command(slot, start_lsn, options);
        self.framed
            .send(|buf| frontend::query(&command, buf))
            .await?;
        loop {
            match self.framed.recv_expected(EXPECTED).await? {
                Backend::CopyBothResponse => return Ok(ReplicationStream::new(self)),
                Backend::Message(Message::NoticeResponse(body)) => log_notice(body.fields()),
                Backend::Message(Message::ParameterStatus(body)) => self.record_parameter(&body)?,
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(server_error(body.fields()));
                }
                other => return Err(unexpected(&other, EXPECTED)),
            }
        }
    }

    /// Says goodbye (Terminate) and closes the socket.
    pub async fn close(mut self) -> Result<(), WireError> {
        self.framed
            .send(|buf| {
                frontend::terminate(buf);
                Ok(())
            })
            .await?;
        self.framed.shutdown().await
    }
}

/// Quotes `name` as an SQL identifier: wrapped in double quotes, inner ones doubled.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes `value` as an SQL string literal: wrapped in single quotes, inner ones doubled (the
/// replication command parser knows no backslash escapes).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The value of pgoutput's `publication_names` option: each name quoted as an identifier (so
/// its case is kept), comma-separated, e.g. `"orders","Customers"`.
pub fn publication_names_option(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| quote_identifier(n))
        .collect::<Vec<_>>()
        .join(",")
}

pub(crate) fn start_replication_command(
    slot: &str,
    start_lsn: Lsn,
    options: &[(&str, &str)],
) -> String {
    let mut command = format!(
        "START_REPLICATION SLOT {} LOGICAL {}",
        quote_identifier(slot),
        format_lsn(start_lsn)
    );
    if !options.is_empty() {
        let options = options
            .iter()
            .map(|(name, value)| format!("{} {}", quote_identifier(name), quote_literal(value)))
            .collect::<Vec<_>>()
            .join(", ");
        command.push_str(&format!(" ({options})"));
    }
    command
}

/// SSLRequest's answer: `'S'` to go on in TLS, `'N'` to go on in plaintext (or hang up).
async fn negotiate_tls(
    mut socket: TcpStream,
    connector: &pgtls::Connector,
    host: &str,
) -> Result<Transport, WireError> {
    let mut request = bytes::BytesMut::new();
    frontend::ssl_request(&mut request);
    socket
        .write_all(&request)
        .await
        .map_err(WireError::io("sending SSLRequest"))?;
    // Exactly one byte, read unbuffered: whatever follows an 'S' belongs to the TLS handshake,
    // and a server (or someone in the path) must not get plaintext bytes read as if encrypted.
    let answer = socket
        .read_u8()
        .await
        .map_err(WireError::io("reading the answer to SSLRequest"))?;
    match answer {
        b'S' => {
            let tls = connector.handshake(host, socket).await?;
            Ok(Transport::Tls(Box::new(tls)))
        }
        b'N' if connector.settings().requires_tls() => Err(connector.refused(host).into()),
        b'N' => Ok(Transport::Tcp(socket)),
        // A server too old for SSLRequest answers with an ErrorResponse.
        other => Err(WireError::Protocol(format!(
            "the server answered SSLRequest with {} instead of 'S' or 'N'",
            super::framing::describe_byte(other)
        ))),
    }
}

async fn open(target: &Target, timeout: Option<Duration>) -> Result<Transport, WireError> {
    let dial = async {
        match target {
            Target::Tcp {
                host,
                port,
                hostaddr,
            } => {
                let stream = match hostaddr {
                    Some(addr) => TcpStream::connect((*addr, *port)).await?,
                    None => TcpStream::connect((host.as_str(), *port)).await?,
                };
                // Status updates are tiny and should not wait for Nagle's algorithm.
                stream.set_nodelay(true)?;
                Ok(Transport::Tcp(stream))
            }
            Target::Unix { socket } => UnixStream::connect(socket).await.map(Transport::Unix),
        }
    };
    let opened = match timeout {
        Some(limit) => tokio::time::timeout(limit, dial).await.unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no connection within {limit:?}"),
            ))
        }),
        None => dial.await,
    };
    opened.map_err(WireError::io(format!("connecting to {target}")))
}

async fn authenticate(framed: &mut Framed, config: &ReplicationConfig) -> Result<(), WireError> {
    const EXPECTED: &str = "an authentication request";
    loop {
        let message = match framed.recv_expected(EXPECTED).await? {
            Backend::Message(message) => message,
            other => return Err(unexpected(&other, EXPECTED)),
        };
        match message {
            Message::AuthenticationOk => return Ok(()),
            Message::AuthenticationCleartextPassword => {
                let password = require_password(config, "a cleartext password")?;
                framed
                    .send(|buf| frontend::password_message(password, buf))
                    .await?;
            }
            Message::AuthenticationMd5Password(body) => {
                let password = require_password(config, "an MD5 password")?;
                let hashed =
                    authentication::md5_hash(config.user().as_bytes(), password, body.salt());
                framed
                    .send(|buf| frontend::password_message(hashed.as_bytes(), buf))
                    .await?;
            }
            Message::AuthenticationSasl(body) => scram_sha_256(framed, config, &body).await?,
            Message::AuthenticationKerberosV5 => {
                return Err(WireError::UnsupportedAuth("Kerberos V5".into()));
            }
            Message::AuthenticationScmCredential => {
                return Err(WireError::UnsupportedAuth("SCM credentials".into()));
            }
            Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => {
                return Err(WireError::UnsupportedAuth("GSSAPI".into()));
            }
            Message::AuthenticationSspi => {
                return Err(WireError::UnsupportedAuth("SSPI".into()));
            }
            Message::ErrorResponse(body) => return Err(server_error(body.fields())),
            Message::NoticeResponse(body) => log_notice(body.fields()),
            other => return Err(unexpected(&Backend::Message(other), EXPECTED)),
        }
    }
}

fn require_password<'c>(config: &'c ReplicationConfig, kind: &str) -> Result<&'c [u8], WireError> {
    config.password().ok_or_else(|| {
        WireError::Config(format!(
            "the server asks for {kind} for user {:?}, but the connection string has none",
            config.user()
        ))
    })
}

/// SCRAM-SHA-256 as in RFC 7677, the client side provided by `postgres-protocol`.
async fn scram_sha_256(
    framed: &mut Framed,
    config: &ReplicationConfig,
    body: &AuthenticationSaslBody,
) -> Result<(), WireError> {
    let mut offered = Vec::new();
    let mut mechanisms = body.mechanisms();
    while let Some(mechanism) = mechanisms
        .next()
        .map_err(|e| WireError::Protocol(format!("malformed SASL mechanism list: {e}")))?
    {
        offered.push(mechanism.to_string());
    }
    if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
        return Err(WireError::UnsupportedAuth(format!(
            "SASL offering {} (only SCRAM-SHA-256 without channel binding is implemented)",
            offered.join(", ")
        )));
    }
    let password = require_password(config, "a SCRAM-SHA-256 password")?;
    // No channel binding is implemented: "unsupported" sends the GS2 flag 'n' ("the client
    // does not support it"), which the server accepts with or without TLS (only 'y', "the
    // client supports it but thinks the server does not", is refused over TLS).
    let mut scram = sasl::ScramSha256::new(password, sasl::ChannelBinding::unsupported());
    framed
        .send(|buf| frontend::sasl_initial_response(sasl::SCRAM_SHA_256, scram.message(), buf))
        .await?;

    const CONTINUE: &str = "AuthenticationSASLContinue";
    match framed.recv_expected(CONTINUE).await? {
        Backend::Message(Message::AuthenticationSaslContinue(body)) => scram
            .update(body.data())
            .map_err(|e| WireError::Protocol(format!("SCRAM server-first message: {e}")))?,
        Backend::Message(Message::ErrorResponse(body)) => return Err(server_error(body.fields())),
        other => return Err(unexpected(&other, CONTINUE)),
    }
    framed
        .send(|buf| frontend::sasl_response(scram.message(), buf))
        .await?;

    const FINAL: &str = "AuthenticationSASLFinal";
    match framed.recv_expected(FINAL).await? {
        Backend::Message(Message::AuthenticationSaslFinal(body)) => {
            scram.finish(body.data()).map_err(|e| {
                WireError::Protocol(format!(
                    "the server's SCRAM signature does not verify (not the server that holds \
                     this password, or a tampered connection): {e}"
                ))
            })
        }
        Backend::Message(Message::ErrorResponse(body)) => Err(server_error(body.fields())),
        other => Err(unexpected(&other, FINAL)),
    }
}

fn copy_refused(what: &str) -> WireError {
    WireError::Protocol(format!(
        "the server sent {what}: simple_query cannot run commands that start a COPY (use \
         start_logical_replication for START_REPLICATION); the connection is no longer usable"
    ))
}

fn column_names(body: &RowDescriptionBody) -> Result<Arc<[String]>, WireError> {
    let mut names = Vec::new();
    let mut fields = body.fields();
    while let Some(field) = fields
        .next()
        .map_err(|e| WireError::Protocol(format!("malformed RowDescription: {e}")))?
    {
        names.push(field.name().to_string());
    }
    Ok(names.into())
}

fn single_row(rows: Vec<Row>, command: &str) -> Result<Row, WireError> {
    let count = rows.len();
    let mut rows = rows.into_iter();
    match (rows.next(), count) {
        (Some(row), 1) => Ok(row),
        _ => Err(WireError::Protocol(format!(
            "{command} returned {count} rows instead of one"
        ))),
    }
}

fn required<'r>(row: &'r Row, column: &str, command: &str) -> Result<&'r str, WireError> {
    row.get(column).ok_or_else(|| {
        WireError::Protocol(format!(
            "{command} returned no {column} (columns: {})",
            row.columns().join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_identifier("slot_1"), "\"slot_1\"");
        assert_eq!(quote_identifier("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("on"), "'on'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("''"), "''''''");
        assert_eq!(publication_names_option(&["a", "b"]), "\"a\",\"b\"");
        assert_eq!(
            publication_names_option(&["Mixed\"Case"]),
            "\"Mixed\"\"Case\""
        );
    }

    #[test]
    fn start_replication_command_quotes_everything() {
        let publications = publication_names_option(&["a", "b"]);
        let command = start_replication_command(
            "s",
            0x16_B374_D848,
            &[
                ("proto_version", "2"),
                ("publication_names", &publications),
                ("streaming", "on"),
                ("messages", "true"),
            ],
        );
        assert_eq!(
            command,
            "START_REPLICATION SLOT \"s\" LOGICAL 16/B374D848 (\"proto_version\" '2', \
             \"publication_names\" '\"a\",\"b\"', \"streaming\" 'on', \"messages\" 'true')"
        );
        assert_eq!(
            start_replication_command("x", 0, &[("o'k", "it's")]),
            "START_REPLICATION SLOT \"x\" LOGICAL 0/0 (\"o'k\" 'it''s')"
        );
        assert_eq!(
            start_replication_command("x", 1, &[]),
            "START_REPLICATION SLOT \"x\" LOGICAL 0/1"
        );
    }

    #[test]
    fn row_lookup() {
        let row = Row {
            columns: vec!["a".to_string(), "b".to_string()].into(),
            values: vec![Some("1".into()), None],
        };
        assert_eq!(row.get("a"), Some("1"));
        assert_eq!(row.get("b"), None);
        assert_eq!(row.get("c"), None);
        assert_eq!(row.get_index(0), Some("1"));
        assert_eq!(row.get_index(7), None);
        assert!(required(&row, "b", "TEST").is_err());
        assert_eq!(single_row(vec![row.clone()], "T").unwrap(), row);
        assert!(single_row(vec![], "T").is_err());
        assert!(single_row(vec![row.clone(), row], "T").is_err());
    }
}
