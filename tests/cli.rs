//! The `parley` binary as a user runs it: bad settings are named, SIGTERM drains, tokens hash.

use std::io::{BufRead, BufReader};
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

#[cfg(unix)]
#[test]
fn serve_starts_on_defaults_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        parley()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Logs go to standard error. Lines arrive on a channel so every wait has a deadline.
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

    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
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
    assert!(
        !seen.iter().any(|l| l.contains("second signal")),
        "{seen:?}"
    );
}
