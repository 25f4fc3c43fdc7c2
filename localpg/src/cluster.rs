use std::collections::HashMap;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::{Connection, PgConnection, RunQueryDsl};
use diesel_migrations::MigrationHarness;
use tempfile::TempDir;

use crate::tls::{ClusterTls, TlsOptions};
use crate::{Binaries, Error, Settings, quote_ident};

/// Where an owned cluster accepts connections. It always listens on a Unix socket in a private
/// directory (no port race, nothing else on the machine can reach it); TCP is for humans and for
/// tools that cannot use a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    UnixOnly,
    /// Also listen on 127.0.0.1; port 0 picks a free one.
    Tcp {
        port: u16,
    },
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Keep the cluster's data here between runs; `None` means a throwaway directory.
    pub data_dir: Option<PathBuf>,
    pub listen: Listen,
    /// `false` turns off fsync and friends: right for tests and throwaway clusters, where speed
    /// matters and a power cut loses nothing of value.
    pub durable: bool,
    pub settings: Settings,
    /// Serve TLS (`ssl = on`) with certificates from a throwaway CA; needs [`Listen::Tcp`], as
    /// PostgreSQL speaks TLS only over TCP, and the crate's `tls` feature.
    pub tls: Option<TlsOptions>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            data_dir: None,
            listen: Listen::UnixOnly,
            durable: false,
            settings: Settings::default(),
            tls: None,
        }
    }
}

/// Settings every cluster gets: later work (replication, several routers) needs logical decoding,
/// slots, senders and more connections than the default 100 once tests run in parallel.
const SERVER_CONF: &str = "
# added by localpg
wal_level = logical
max_replication_slots = 32
max_wal_senders = 32
max_connections = 300
shared_buffers = 128MB
";

/// A PostgreSQL server: one we started (and stop and remove on drop), or an existing one.
#[derive(Debug)]
pub struct Cluster {
    server: Server,
    /// Migrated template databases by key, so each test clones instead of re-migrating.
    templates: Mutex<HashMap<String, String>>,
}

#[derive(Debug)]
enum Server {
    Owned(Box<Owned>),
    External { url: String },
}

#[derive(Debug)]
struct Owned {
    binaries: Binaries,
    runner: Runner,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    tcp: bool,
    tls: Option<ClusterTls>,
    /// Holds the socket directory, the log and (unless persistent) the data directory.
    work: Option<TempDir>,
    /// Its stdin is our end of a pipe: when this process dies however it dies, the pipe closes and
    /// the watchdog stops the server and removes the work directory.
    watchdog: Option<(Child, ChildStdin)>,
}

/// Runs server programs directly, or as the `postgres` user when we are root (initdb, pg_ctl and
/// postgres all refuse to run as root).
#[derive(Debug, Clone)]
enum Runner {
    Direct,
    AsUser {
        name: String,
        uid: nix::unistd::Uid,
        gid: nix::unistd::Gid,
    },
}

impl Runner {
    fn detect() -> Result<Self, Error> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(Runner::Direct);
        }
        let user = nix::unistd::User::from_name("postgres")
            .ok()
            .flatten()
            .ok_or(Error::NoPostgresUser)?;
        Ok(Runner::AsUser {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
        })
    }

    fn command(&self, program: &Path) -> Command {
        match self {
            Runner::Direct => Command::new(program),
            Runner::AsUser { name, .. } => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", name, "--"]).arg(program);
                cmd
            }
        }
    }

    /// Gives `path` (a directory or a file) to the server's user.
    fn hand_over(&self, path: &Path) -> Result<(), Error> {
        if let Runner::AsUser { uid, gid, .. } = self {
            std::os::unix::fs::chown(path, Some(uid.as_raw()), Some(gid.as_raw())).map_err(
                Error::io("giving the cluster directory to the postgres user"),
            )?;
        }
        Ok(())
    }

    fn prepare_data_dir(&self, dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(dir).map_err(Error::io("creating the data directory"))?;
        let Runner::AsUser { uid, name, .. } = self else {
            return Ok(());
        };
        use std::os::unix::fs::MetadataExt;
        // The server runs as another user: it must be able to walk down to its data directory.
        for ancestor in dir.ancestors().skip(1) {
            let meta = std::fs::metadata(ancestor)
                .map_err(Error::io("reading the data directory's parents"))?;
            let walkable = meta.uid() == uid.as_raw() || meta.mode() & 0o001 != 0;
            if !walkable {
                return Err(Error::DataDirUnreachable {
                    path: dir.to_path_buf(),
                    blocked_at: ancestor.to_path_buf(),
                    user: name.clone(),
                });
            }
        }
        let owner = std::fs::metadata(dir)
            .map_err(Error::io("reading the data directory"))?
            .uid();
        if owner == uid.as_raw() {
            return Ok(());
        }
        let empty = std::fs::read_dir(dir)
            .map_err(Error::io("reading the data directory"))?
            .next()
            .is_none();
        if !empty {
            return Err(Error::DataDirOwner {
                path: dir.to_path_buf(),
                user: name.clone(),
            });
        }
        self.hand_over(dir)
    }
}

impl Cluster {
    /// Uses an existing server, or starts a throwaway one, as `options.settings` says.
    pub fn start(options: ClusterOptions) -> Result<Cluster, Error> {
        if let Some(url) = &options.settings.url {
            if options.tls.is_some() {
                return Err(Error::Setting {
                    name: "tls",
                    detail: format!(
                        "TLS certificates are only made for a cluster of our own, but {} names an \
                         existing server",
                        crate::settings::ENV_URL
                    ),
                });
            }
            return Ok(Cluster::external(url));
        }
        if options.tls.is_some() && options.listen == Listen::UnixOnly {
            return Err(Error::Setting {
                name: "tls",
                detail: "PostgreSQL speaks TLS only over TCP: listen on a TCP port".into(),
            });
        }
        let owned = Owned::start(&options)?;
        let cluster = Cluster {
            server: Server::Owned(Box::new(owned)),
            templates: Mutex::new(HashMap::new()),
        };
        // Proves the server answers before anyone is handed a URL.
        cluster.admin()?;
        Ok(cluster)
    }

    /// An existing server: databases are created on it, and nothing is stopped on drop.
    pub fn external(url: &str) -> Cluster {
        Cluster {
            server: Server::External {
                url: url.to_string(),
            },
            templates: Mutex::new(HashMap::new()),
        }
    }

    /// A libpq connection URL for `database` on this server. On a TLS cluster it connects to
    /// the certificate's first name with `sslmode=verify-full` and the CA as `sslrootcert`.
    pub fn url(&self, database: &str) -> String {
        match &self.server {
            Server::Owned(o) if o.tls.is_some() => {
                let tls = o.tls.as_ref().expect("matched");
                let host = tls
                    .server_names()
                    .first()
                    .map_or("localhost", String::as_str);
                let ca = tls.ca_path().display().to_string();
                self.url_via(
                    database,
                    host,
                    &[("sslmode", "verify-full"), ("sslrootcert", &ca)],
                )
            }
            Server::Owned(o) if o.tcp => {
                format!("postgresql://postgres@127.0.0.1:{}/{database}", o.port)
            }
            Server::Owned(o) => format!(
                "postgresql://postgres@/{database}?host={}&port={}",
                o.socket_dir.display(),
                o.port
            ),
            Server::External { url } => with_database(url, database),
        }
    }

    /// A URL for `database` over TCP to `host` (any name or address that reaches this machine's
    /// loopback) with `params` as its query, e.g. `[("sslmode", "require")]`; the cluster's own
    /// [`url`](Self::url) when it does not listen on TCP.
    pub fn url_via(&self, database: &str, host: &str, params: &[(&str, &str)]) -> String {
        let Some(port) = self.tcp_port() else {
            return self.url(database);
        };
        let query: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{}", query.join("&"))
        };
        format!("postgresql://postgres@{host}:{port}/{database}{query}")
    }

    /// The certificates of a cluster started with [`ClusterOptions::tls`].
    pub fn tls(&self) -> Option<&ClusterTls> {
        match &self.server {
            Server::Owned(o) => o.tls.as_ref(),
            Server::External { .. } => None,
        }
    }

    /// The TCP port, when the cluster listens on one.
    pub fn tcp_port(&self) -> Option<u16> {
        match &self.server {
            Server::Owned(o) if o.tcp => Some(o.port),
            _ => None,
        }
    }

    /// The server binaries of a cluster we own (`pg_dump`, `pgbench`, ... live beside them).
    pub fn binaries(&self) -> Option<&Binaries> {
        match &self.server {
            Server::Owned(o) => Some(&o.binaries),
            Server::External { .. } => None,
        }
    }

    pub fn data_dir(&self) -> Option<&Path> {
        match &self.server {
            Server::Owned(o) => Some(&o.data_dir),
            Server::External { .. } => None,
        }
    }

    fn admin_database(&self) -> String {
        match &self.server {
            Server::Owned(_) => "postgres".to_string(),
            Server::External { url } => database_of(url).unwrap_or_else(|| "postgres".into()),
        }
    }

    /// A connection to the maintenance database.
    pub fn admin(&self) -> Result<PgConnection, Error> {
        self.connect(&self.admin_database())
    }

    pub fn connect(&self, database: &str) -> Result<PgConnection, Error> {
        let url = self.url(database);
        PgConnection::establish(&url).map_err(|source| Error::Connect { url, source })
    }

    pub fn database_exists(&self, name: &str) -> Result<bool, Error> {
        #[derive(diesel::QueryableByName)]
        struct Found {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            found: bool,
        }
        let row: Found = diesel::sql_query(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS found",
        )
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result(&mut self.admin()?)?;
        Ok(row.found)
    }

    /// Creates `name` unless it exists; returns whether it was created.
    pub fn create_database(&self, name: &str) -> Result<bool, Error> {
        if self.database_exists(name)? {
            return Ok(false);
        }
        diesel::sql_query(format!("CREATE DATABASE {}", quote_ident(name)))
            .execute(&mut self.admin()?)?;
        Ok(true)
    }

    /// Creates `name` as a copy of `template`.
    pub fn create_database_from(&self, name: &str, template: &str) -> Result<(), Error> {
        let sql = format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(name),
            quote_ident(template)
        );
        let mut admin = self.admin()?;
        // A connection that just closed (the migration run) can still be winding down on the
        // server, which makes CREATE DATABASE refuse the template for a moment.
        let mut attempt = 0;
        loop {
            match diesel::sql_query(&sql).execute(&mut admin) {
                Ok(_) => return Ok(()),
                Err(e)
                    if attempt < 50 && e.to_string().contains("being accessed by other users") =>
                {
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Drops `name`, disconnecting anyone still using it.
    pub fn drop_database(&self, name: &str) -> Result<(), Error> {
        diesel::sql_query(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .execute(&mut self.admin()?)?;
        Ok(())
    }

    /// Runs every pending migration of `source` on `database`.
    pub fn migrate<S: MigrationSource<Pg>>(&self, database: &str, source: S) -> Result<(), Error> {
        let mut conn = self.connect(database)?;
        conn.run_pending_migrations(source)
            .map(|_| ())
            .map_err(|e| Error::Migration {
                database: database.to_string(),
                detail: e.to_string(),
            })
    }

    /// A database migrated with `source`, created once per cluster and key, to clone from.
    pub fn template<S: MigrationSource<Pg>>(&self, key: &str, source: S) -> Result<String, Error> {
        let mut templates = self
            .templates
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(name) = templates.get(key) {
            return Ok(name.clone());
        }
        // The pid keeps test processes sharing one external server apart.
        let name = format!("tpl_{key}_{}", std::process::id());
        self.drop_database(&name)?;
        self.create_database(&name)?;
        self.migrate(&name, source)?;
        templates.insert(key.to_string(), name.clone());
        Ok(name)
    }

    /// Stops the server (if we own it) and removes its throwaway files.
    pub fn stop(mut self) -> Result<(), Error> {
        match &mut self.server {
            Server::Owned(o) => o.shutdown(),
            Server::External { .. } => Ok(()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Server::Owned(o) = &mut self.server
            && let Err(e) = o.shutdown()
        {
            tracing::warn!(error = %e, "stopping the local PostgreSQL cluster failed");
        }
    }
}

impl Owned {
    fn start(options: &ClusterOptions) -> Result<Owned, Error> {
        let binaries = Binaries::find(options.settings.bindir.as_deref())?;
        let runner = Runner::detect()?;
        let work = tempfile::Builder::new()
            .prefix("localpg-")
            .tempdir()
            .map_err(Error::io("creating the cluster directory"))?;
        runner.hand_over(work.path())?;
        let socket_dir = work.path().to_path_buf();
        let data_dir = match &options.data_dir {
            Some(dir) => std::path::absolute(dir).map_err(Error::io("resolving --data-dir"))?,
            None => work.path().join("data"),
        };
        runner.prepare_data_dir(&data_dir)?;

        let mut owned = Owned {
            binaries,
            runner,
            data_dir,
            socket_dir,
            port: 5432,
            tcp: matches!(options.listen, Listen::Tcp { .. }),
            tls: None,
            work: Some(work),
            watchdog: None,
        };
        owned.spawn_watchdog()?;
        if let Some(tls) = &options.tls {
            let files = crate::tls::generate(&owned.socket_dir, tls)?;
            // The server insists that its key be its own and unreadable by others (0600).
            owned.runner.hand_over(&files.key)?;
            owned.tls = Some(files);
        }
        if !owned.data_dir.join("PG_VERSION").exists() {
            owned.initdb()?;
        }
        owned.pg_start(options)?;
        Ok(owned)
    }

    fn run(&self, step: &'static str, cmd: &mut Command) -> Result<String, Error> {
        let out = cmd.output().map_err(Error::io(step))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(Error::Command { step, detail: text })
        }
    }

    fn initdb(&self) -> Result<(), Error> {
        let mut cmd = self.runner.command(&self.binaries.program("initdb"));
        cmd.arg("-D").arg(&self.data_dir).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
        ]);
        self.run("initdb", &mut cmd)?;
        let conf = self.data_dir.join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(Error::io("configuring postgresql.conf"))?;
        std::io::Write::write_all(&mut file, SERVER_CONF.as_bytes())
            .map_err(Error::io("configuring postgresql.conf"))?;
        Ok(())
    }

    fn pg_start(&mut self, options: &ClusterOptions) -> Result<(), Error> {
        let log = self.socket_dir.join("server.log");
        // Without durability, commits return before their WAL is flushed; logical decoding
        // reads only flushed WAL, so every replicated change would wait for the WAL writer's
        // next wake-up (200 ms by default). Every 10 ms keeps a throwaway cluster's replication
        // latency close to a durable one's.
        let durability = if options.durable {
            ""
        } else {
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c wal_writer_delay=10ms"
        };
        let requested = match options.listen {
            Listen::UnixOnly => None,
            Listen::Tcp { port } => Some(port),
        };
        // A free port can be taken between our probe and the server's bind; retry a few times.
        for _ in 0..5 {
            self.port = match requested {
                None => 5432,
                Some(0) => free_port()?,
                Some(port) => port,
            };
            let listen = if requested.is_some() { "127.0.0.1" } else { "" };
            let ssl = match &self.tls {
                Some(tls) => format!(
                    " -c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}'",
                    tls.cert.display(),
                    tls.key.display()
                ),
                None => String::new(),
            };
            // pg_ctl hands -o to a shell, hence the quoting.
            let server_opts = format!(
                "-p {} -k '{}' -c listen_addresses='{listen}'{durability}{ssl}",
                self.port,
                self.socket_dir.display()
            );
            let mut cmd = self.runner.command(&self.binaries.program("pg_ctl"));
            cmd.args(["start", "-w", "-t", "120", "-D"])
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&log)
                .args(["-o", &server_opts]);
            match self.run("pg_ctl start", &mut cmd) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let server_log = std::fs::read_to_string(&log).unwrap_or_default();
                    if requested == Some(0) && server_log.contains("could not bind") {
                        std::fs::remove_file(&log).ok();
                        continue;
                    }
                    return Err(Error::Command {
                        step: "pg_ctl start",
                        detail: format!("{e}\nserver log:\n{}", tail(&server_log, 40)),
                    });
                }
            }
        }
        Err(Error::Command {
            step: "pg_ctl start",
            detail: "no free TCP port after 5 attempts".into(),
        })
    }

    fn stop_command(&self, mode: &str) -> Command {
        let mut cmd = self.runner.command(&self.binaries.program("pg_ctl"));
        cmd.args(["stop", "-w", "-m", mode, "-D"])
            .arg(&self.data_dir);
        cmd
    }

    fn spawn_watchdog(&mut self) -> Result<(), Error> {
        let stop = self.stop_command("immediate");
        let work = self.socket_dir.clone();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"d="$1"; shift; cat >/dev/null 2>&1; "$@" >/dev/null 2>&1; rm -rf "$d""#)
            .arg("localpg-watchdog")
            .arg(&work)
            .arg(stop.get_program())
            .args(stop.get_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so Ctrl-C in a terminal reaches us, not the watchdog.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(Error::io("starting the cleanup watchdog"))?;
        let stdin = child.stdin.take().ok_or_else(|| Error::Command {
            step: "starting the cleanup watchdog",
            detail: "no stdin pipe".into(),
        })?;
        self.watchdog = Some((child, stdin));
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), Error> {
        let Some(work) = self.work.take() else {
            return Ok(());
        };
        let result = if self.data_dir.join("postmaster.pid").exists() {
            let mut stop = self.stop_command("fast");
            self.run("pg_ctl stop", &mut stop).map(|_| ())
        } else {
            Ok(())
        };
        drop(work);
        if let Some((mut child, stdin)) = self.watchdog.take() {
            drop(stdin);
            child.wait().ok();
        }
        result
    }
}

fn free_port() -> Result<u16, Error> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(Error::io("finding a free TCP port"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(Error::io("finding a free TCP port"))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Splits `scheme://authority/path?query` into (prefix up to the path, path, query).
fn split_url(url: &str) -> (&str, &str, &str) {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let (before_query, query) = match url.find('?') {
        Some(q) => (&url[..q], &url[q..]),
        None => (url, ""),
    };
    match before_query[after_scheme..].find('/') {
        Some(slash) => {
            let cut = after_scheme + slash;
            (&before_query[..cut], &before_query[cut + 1..], query)
        }
        None => (before_query, "", query),
    }
}

/// Escapes what would end or split a URL query value (file paths go in `sslrootcert`).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

fn with_database(url: &str, database: &str) -> String {
    let (prefix, _, query) = split_url(url);
    format!("{prefix}/{database}{query}")
}

fn database_of(url: &str) -> Option<String> {
    let (_, path, _) = split_url(url);
    (!path.is_empty()).then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_swapped_in_external_urls() {
        let cases = [
            ("postgres://u:p@h:5433/app", "x", "postgres://u:p@h:5433/x"),
            (
                "postgres://u@h/app?sslmode=disable",
                "x",
                "postgres://u@h/x?sslmode=disable",
            ),
            ("postgres://u@h", "x", "postgres://u@h/x"),
            (
                "postgresql://u@/app?host=/tmp",
                "x",
                "postgresql://u@/x?host=/tmp",
            ),
        ];
        for (url, db, want) in cases {
            assert_eq!(with_database(url, db), want, "{url}");
        }
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(percent_encode("/tmp/x-1/ca.pem"), "/tmp/x-1/ca.pem");
        assert_eq!(percent_encode("a b&c=d%"), "a%20b%26c%3Dd%25");
    }

    #[test]
    fn admin_database_comes_from_the_external_url() {
        assert_eq!(
            database_of("postgres://u@h:1/maint").as_deref(),
            Some("maint")
        );
        assert_eq!(database_of("postgres://u@h:1"), None);
        assert_eq!(database_of("postgres://u@h:1/?sslmode=require"), None);
    }
}
