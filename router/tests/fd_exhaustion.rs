//! The router out of file descriptors. This file holds a single test because it lowers the
//! limit of the whole test process: no other test may run beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use router::{LiveToggles, RouteTable, Router, ToggleSet};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

mod support;

use support::raw::{OK, answering, read_answer};

/// Sends a GET on `stream` and reads its answer.
async fn get(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: shop\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_answer(stream).await
}

/// Reads this process's CPU time through a file opened beforehand: once descriptors run out,
/// nothing new can be opened.
struct CpuClock {
    stat: std::fs::File,
    ticks_per_second: u64,
}

impl CpuClock {
    fn open() -> CpuClock {
        CpuClock {
            stat: std::fs::File::open("/proc/self/stat").unwrap(),
            ticks_per_second: command("getconf", &["CLK_TCK"]).trim().parse().unwrap(),
        }
    }

    /// User and system CPU time of this process so far.
    fn now(&self) -> Duration {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 1024];
        let n = self.stat.read_at(&mut buf, 0).unwrap();
        let stat = String::from_utf8_lossy(&buf[..n]);
        // utime and stime are the 12th and 13th fields after the command name (which is in
        // parentheses and may hold spaces).
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<u64> = after
            .split(' ')
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        Duration::from_millis((fields[0] + fields[1]) * 1000 / self.ticks_per_second)
    }
}

fn command(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// This process's (soft, hard) limit on open files.
fn nofile() -> (String, String) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut values = line["Max open files".len()..].split_whitespace();
    (
        values.next().unwrap().to_string(),
        values.next().unwrap().to_string(),
    )
}

/// Sets this process's limit on open files (util-linux's prlimit: the workspace has no unsafe
/// code to call setrlimit with).
fn set_nofile(soft: &str, hard: &str) {
    let pid = std::process::id().to_string();
    command(
        "prlimit",
        &["--pid", &pid, &format!("--nofile={soft}:{hard}")],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_router_pauses_accepts_blames_no_upstream_and_recovers() {
    let (monolith, _) = answering(OK).await;
    let (catalog, _) = answering(OK).await;
    let table = RouteTable::parse(&format!(
        r#"
        default_upstream = "catalog"
        [upstreams]
        monolith = "{monolith}"
        catalog = "{catalog}"
        [capabilities.catalog]
        legacy = "monolith"
        extracted = "catalog"
        read_toggle = "catalog.reads"
        shadow_toggle = "catalog.shadow"
        write_owner = "legacy"
        [[routes]]
        prefix = "/catalog/"
        capability = "catalog"
        "#
    ))
    .unwrap();
    let live = Arc::new(LiveToggles::new(ToggleSet::empty()));
    let router = Arc::new(
        Router::new(Arc::new(table), live, "test").with_breakers(1, Duration::from_secs(10)),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(router::serve(listener, router.clone()));

    let mut first = TcpStream::connect(addr).await.unwrap();
    // A kept connection to the monolith (the catalog's legacy side, toggle off); none yet to
    // the catalog service, which serves unrouted paths here.
    assert!(
        get(&mut first, "/catalog/albums")
            .await
            .starts_with("HTTP/1.1 200")
    );

    let clock = CpuClock::open();
    let (soft, hard) = nofile();
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count();
    set_nofile(&(open + 64).to_string(), &hard);
    let mut hogs = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        hogs.push(file);
    }

    // The router cannot connect to the catalog: its own shortage, not the catalog's failure
    // (one failure would open this breaker).
    let text = get(&mut first, "/orders").await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("router_overloaded"), "{text}");
    let catalog = router.table.upstream_named("catalog").unwrap();
    assert_eq!(
        router.breakers[catalog].state(),
        router::breaker::State::Closed
    );

    // One descriptor for a new client's socket; the router cannot accept it.
    hogs.pop();
    let mut second = TcpStream::connect(addr).await.unwrap();
    let (cpu, wall) = (clock.now(), Instant::now());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu, wall) = (clock.now() - cpu, wall.elapsed());
    assert!(
        cpu < wall / 4,
        "the accept loop spun: {cpu:?} of CPU in {wall:?}"
    );

    hogs.truncate(hogs.len().saturating_sub(32));
    let text = get(&mut second, "/orders").await;
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "served once descriptors are back: {text}"
    );
    drop(hogs);
    set_nofile(&soft, &hard);
}
