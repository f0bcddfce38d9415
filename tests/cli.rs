//! The `parley` binary as a user runs it: bad settings are named, SIGTERM drains, tokens hash.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn parley() -> Command {
    Command::new(env!("CARGO_BIN_EXE_parley"))
}

#[test]
fn a_bad_setting_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = parley()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env("PARLEY_LIMITS__FRAME_MAX_BYTES", "12")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("limits.frame_max_bytes"), "{stderr}");

    let out = parley()
        .args(["serve", "--config", "missing.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));

    std::fs::write(
        dir.path().join("parley.toml"),
        "[routing]\ndefault_capacty = 3\n",
    )
    .unwrap();
    let out = parley()
        .args(["serve"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("default_capacty"));
}

#[test]
fn an_address_in_use_stops_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    // Held for the whole test, so the server cannot take the port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let child = parley()
        .args(["serve", "--listen", &address])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    // On a thread, so that a server that did start fails the test instead of hanging it.
    let (tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = done.recv_timeout(Duration::from_secs(20)) else {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        panic!("parley served on an address already in use");
    };
    let out = out.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {address} (setting `listen`)")),
        "{stderr}"
    );
}

#[test]
fn hash_token_prints_the_sha256() {
    let out = parley().args(["hash-token", "abc"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

/// Kills the server if the test fails half-way, so a failure never leaves a
/// process holding the test harness's output open (which would hang `cargo test`).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `parley serve` on embedded defaults in `dir`, its log lines (on a channel, so every wait has
/// a deadline), the lines seen until it listened, and the address it listens on.
#[cfg(unix)]
fn serve_on_defaults(dir: &Path) -> (KillOnDrop, mpsc::Receiver<String>, Vec<String>, String) {
    serve_with_env(dir, &[])
}

/// As [`serve_on_defaults`], with settings given as `PARLEY_*` environment variables.
#[cfg(unix)]
fn serve_with_env(
    dir: &Path,
    env: &[(&str, &str)],
) -> (KillOnDrop, mpsc::Receiver<String>, Vec<String>, String) {
    let mut child = KillOnDrop(
        parley()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            // Not NO_COLOR: standard error is a pipe here, which alone must keep colour out
            // (`serve_starts_on_defaults_and_drains_on_sigterm` checks it).
            .env_remove("NO_COLOR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Logs go to standard error.
    let stderr = child.0.stderr.take().unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let address = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no listening line in time; saw {seen:?}"));
        seen.push(line.clone());
        if let Some(rest) = line.split("Parley on http://").nth(1) {
            break rest.split(':').take(2).collect::<Vec<_>>().join(":");
        }
    };
    (child, lines, seen, address)
}

#[cfg(unix)]
#[test]
fn serve_starts_on_defaults_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, lines, mut seen, address) = serve_on_defaults(dir.path());
    let port: String = address
        .split(':')
        .nth(1)
        .unwrap()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(port.parse::<u16>().unwrap() > 0);
    // The SQLite store was created under ./data.
    assert!(dir.path().join("data/parley.db").exists());

    // Three visitors past `hello`, each a socket task and a writer task: the drain counts them
    // as three sockets.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut sockets = rt.block_on(async {
        let mut sockets = Vec::new();
        for _ in 0..3 {
            sockets.push(visitor_after_welcome(&address).await);
        }
        sockets
    });

    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    // Each socket read to its close, so the drain does not wait on the client.
    rt.block_on(async {
        for ws in &mut sockets {
            use futures::StreamExt;
            while let Ok(Some(Ok(_))) =
                tokio::time::timeout(Duration::from_secs(20), ws.next()).await
            {}
        }
    });
    // The stream ends when the process exits.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
        seen.push(line);
    }
    let status = child.0.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "clean exit after the drain: {seen:?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("demo mode")),
        "embedded defaults start in demo mode on loopback: {seen:?}"
    );
    assert!(seen.iter().any(|l| l.contains("drained")), "{seen:?}");
    let draining: Vec<_> = seen
        .iter()
        .filter(|l| l.contains("closing sockets with 1012"))
        .collect();
    assert!(
        matches!(&draining[..], [line] if line.contains("sockets=3")),
        "the drain counts each socket once: {draining:?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("\x1b[")),
        "no colour codes in logs that are not written to a terminal: {seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("second signal")),
        "{seen:?}"
    );
}

/// A visitor socket to the server at `address` that has had its `welcome`.
#[cfg(unix)]
async fn visitor_after_welcome(
    address: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{address}/v1/visitor"))
        .await
        .unwrap();
    ws.send(Message::text(r#"{"type":"hello","name":"Drained"}"#))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("welcome in time")
            .unwrap()
            .unwrap();
        if frame
            .to_text()
            .unwrap_or_default()
            .contains(r#""type":"welcome""#)
        {
            return ws;
        }
    }
}

/// A start that changes the schema says so, naming what it applies, because a migration that
/// copies a large table makes the start slow; a start with nothing to apply says nothing of it.
#[cfg(unix)]
#[test]
fn a_start_that_migrates_says_so_and_a_later_start_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count();
    let (first, _lines, seen, _address) = serve_on_defaults(dir.path());
    drop(first);
    let migrating: Vec<_> = seen
        .iter()
        .filter(|l| l.contains("migrating the transcript store"))
        .collect();
    assert_eq!(migrating.len(), 1, "{seen:?}");
    assert!(migrating[0].contains("4 message keys"), "{seen:?}");
    assert!(
        seen.iter().any(|l| l.contains("transcript store migrated")
            && l.contains(&format!("applied={migrations}"))),
        "{seen:?}"
    );

    let (_second, _lines, seen, _address) = serve_on_defaults(dir.path());
    assert!(!seen.iter().any(|l| l.contains("migrat")), "{seen:?}");
}

/// A store write held up (here by another process's write lock on the database) is reported in
/// one short line with the batch's size, not by sqlx's slow-statement warning, which carries the
/// whole multi-row statement (106 KB lines at capacity, docs/benchmarks.md 2b).
#[cfg(unix)]
#[test]
fn a_slow_store_write_is_one_short_warning() {
    use futures::{SinkExt, StreamExt};
    use sqlx::Connection;
    use tokio_tungstenite::tungstenite::Message;

    let dir = tempfile::tempdir().unwrap();
    // Write each batch at once, so the write starts while the lock below is held.
    let (_child, lines, mut seen, address) = serve_with_env(
        dir.path(),
        &[("PARLEY_TRANSCRIPTS__FLUSH_INTERVAL", "10ms")],
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = format!("sqlite:{}", dir.path().join("data/parley.db").display());
        let mut lock = sqlx::SqliteConnection::connect(&db).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut lock)
            .await
            .unwrap();

        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{address}/v1/visitor"))
            .await
            .unwrap();
        let mut frames: Vec<String> = Vec::new();
        for frame in [
            r#"{"type":"hello","name":"Slow"}"#,
            r#"{"type":"start","category":"account","text":"hello","cid":"c1"}"#,
        ] {
            ws.send(Message::text(frame)).await.unwrap();
        }
        // Accepted (queued) while the store is locked: the write is behind, and the ack waits
        // for it.
        while !frames.iter().any(|f| f.contains(r#""type":"queued""#)) {
            let next = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("queued in time")
                .unwrap()
                .unwrap();
            frames.push(next.into_text().unwrap().to_string());
        }
        // The slow condition itself, not a wait for something: the write waits on this lock
        // (busy_timeout 5 s), so it takes at least this long and then succeeds.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    });

    let warning = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no slow-write warning in time; saw {seen:?}"));
        seen.push(line.clone());
        if line.contains("slow transcript write") {
            break line;
        }
    };
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("messages=1"), "{warning}");
    assert!(warning.contains("ok=true"), "{warning}");
    assert!(
        !seen.iter().any(|l| l.contains("slow statement")),
        "sqlx's slow-statement warning (with the statement) is at debug level: {seen:?}"
    );
}

/// SQLite's threads yield the CPU to socket work (docs/benchmarks.md, 2a): every one of them runs
/// under Linux's `SCHED_IDLE` policy once the server listens.
#[cfg(target_os = "linux")]
#[test]
fn the_store_threads_run_at_background_priority() {
    const SCHED_IDLE: &str = "5";
    let dir = tempfile::tempdir().unwrap();
    let (child, _lines, _seen, _address) = serve_on_defaults(dir.path());
    let tasks = format!("/proc/{}/task", child.0.id());
    // A connection opened after start-up is lowered as it connects, before its first query: poll
    // briefly rather than read once, so such a thread caught mid-connect does not fail the test.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let threads = store_threads(&tasks);
        assert!(
            !threads.is_empty(),
            "no thread named {}* in {tasks}",
            parley::transcript::sqlite::STORE_THREAD_PREFIX
        );
        let normal: Vec<_> = threads.iter().filter(|(_, p)| p != SCHED_IDLE).collect();
        if normal.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "store threads not at background priority (name, policy): {normal:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The threads of the process whose `/proc` task directory is `tasks` that are SQLite
/// connections' threads, with their scheduling policy (field 41 of `stat`).
#[cfg(target_os = "linux")]
fn store_threads(tasks: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(tasks).unwrap() {
        let path = task.unwrap().path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !name.starts_with(parley::transcript::sqlite::STORE_THREAD_PREFIX) {
            continue;
        }
        // A thread that ended meanwhile has no stat.
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields are counted after the name, which may hold spaces and ends at the last ')'.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = after_name.split(' ').nth(41 - 3).unwrap().to_string();
        found.push((name.trim().to_string(), policy));
    }
    found
}
