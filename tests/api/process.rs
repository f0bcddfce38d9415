//! The `parley` binary itself, started with `parley serve --config <file>` on port 0: what a
//! test needs for a real `kill -9` of a real process, and a restart on the same data.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use parley::config::Config;
use serde_json::Value;

use crate::helpers::{Gateway, FRAME_TIMEOUT};

pub struct ProcessNode {
    gateway: Gateway,
    child: Option<Child>,
    config_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Deref for ProcessNode {
    type Target = Gateway;
    fn deref(&self) -> &Gateway {
        &self.gateway
    }
}

impl ProcessNode {
    /// Writes `config` to `dir/parley.toml` and starts the binary on it; `dir` lives as long
    /// as the node (put the data directory in it to keep it across restarts).
    pub async fn start(config: Config, dir: tempfile::TempDir) -> Self {
        let config_file = dir.path().join("parley.toml");
        std::fs::write(&config_file, to_toml(&config)).expect("write the config file");
        let mut node = ProcessNode {
            gateway: Gateway {
                addr: "127.0.0.1:0".parse().unwrap(),
            },
            child: None,
            config_file,
            _dir: dir,
        };
        node.spawn().await;
        node
    }

    /// Starts the binary again on the same configuration and data, after [`ProcessNode::kill9`].
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "restart a node that is not running");
        self.spawn().await;
    }

    async fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
            .args(["serve", "--config"])
            .arg(&self.config_file)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start parley");
        // Logs go to standard error; the first lines say where it listens.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("[parley process] {line}");
                }
                let _ = tx.send(line);
            }
        });
        self.child = Some(child);
        let addr = tokio::task::spawn_blocking(move || {
            let mut seen = Vec::new();
            loop {
                let line = rx
                    .recv_timeout(FRAME_TIMEOUT)
                    .unwrap_or_else(|_| panic!("parley did not say where it listens: {seen:?}"));
                if let Some(rest) = line.split("Parley on http://").nth(1) {
                    // "127.0.0.1:PORT: visitors ws://…"
                    let addr = rest.split(": ").next().unwrap_or_default().to_string();
                    // Keep draining, so the process never blocks on a full pipe.
                    std::thread::spawn(move || while rx.recv().is_ok() {});
                    return addr.parse::<SocketAddr>().expect("listening address");
                }
                seen.push(line);
            }
        })
        .await
        .expect("reading the logs");
        self.gateway.addr = addr;
        let ready = self.gateway.http_url("/readyz");
        crate::helpers::eventually("the node to be ready", FRAME_TIMEOUT, || {
            let ready = ready.clone();
            async move { reqwest::get(ready).await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }

    /// SIGTERM, and waits for the drain to end the process with success.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "kill -TERM");
            let status = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
                .await
                .unwrap();
            assert!(status.success(), "the drain ended with {status}");
        }
    }

    /// `kill -9`: the kernel ends the process; nothing in it runs again.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "kill -9");
            let status = child.wait().expect("wait");
            assert_eq!(
                std::os::unix::process::ExitStatusExt::signal(&status),
                Some(9)
            );
        }
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The configuration as a TOML file (what `config::load` reads): tables for the sections,
/// `[[agents]]` for the agents; unset options are left out.
fn to_toml(config: &Config) -> String {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::Null => None,
            // JSON's string escapes are valid in TOML basic strings.
            Value::String(_) | Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
            Value::Array(items) => Some(format!(
                "[{}]",
                items
                    .iter()
                    .filter_map(scalar)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Value::Object(_) => None,
        }
    }
    fn table(out: &mut String, header: &str, map: &serde_json::Map<String, Value>) {
        out.push_str(header);
        out.push('\n');
        for (k, v) in map {
            if let Some(text) = scalar(v) {
                out.push_str(&format!("{k} = {text}\n"));
            }
        }
    }
    let value = serde_json::to_value(config).expect("config serialises");
    let top = value.as_object().expect("a table");
    let mut out = String::new();
    for (k, v) in top {
        if !v.is_object() && !v.as_array().is_some_and(|a| a.iter().any(Value::is_object)) {
            if let Some(text) = scalar(v) {
                out.push_str(&format!("{k} = {text}\n"));
            }
        }
    }
    for (k, v) in top {
        if let Value::Object(map) = v {
            table(&mut out, &format!("\n[{k}]"), map);
        }
    }
    for (k, v) in top {
        if let Value::Array(items) = v {
            for item in items.iter().filter_map(Value::as_object) {
                table(&mut out, &format!("\n[[{k}]]"), item);
            }
        }
    }
    out
}
