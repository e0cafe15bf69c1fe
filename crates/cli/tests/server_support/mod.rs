//! The server tests' harness: `facegate serve` started on a loopback port with a config file,
//! waited on until ready, killed when dropped; API keys and a searchable gallery made with the CLI.
#![allow(dead_code)] // each test file uses its own subset

use crate::common::shared_with;
use reqwest::blocking::Client;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn shared() -> Option<PathBuf> {
    shared_with("data/people/obama.jpg")
}

pub fn facegate(data: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn key(data: &Path, role: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&facegate(data, &["apikey", "create", "--role", role])).unwrap();
    v["key"].as_str().unwrap().to_string()
}

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start(data: &Path, config: &str) -> Server {
    let cfg = data.join("server.toml");
    std::fs::write(&cfg, config).unwrap();
    let srv = spawn(data, &cfg);
    wait_ready(&srv.base, &Client::new());
    srv
}

/// Start `facegate serve` with a config file; the first stdout line names the address.
pub fn spawn(data: &Path, cfg: &Path) -> Server {
    spawn_in(data, cfg, None)
}

/// [`spawn`] with a facegate home of its own.
pub fn spawn_in(data: &Path, cfg: &Path, home: Option<&str>) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_facegate"));
    if let Some(h) = home {
        cmd.args(["--home", h]);
    }
    let mut child = cmd
        .arg("--data-dir")
        .arg(data)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .expect("address line")
        .to_string();
    Server { child, base }
}

/// Poll /readyz until it answers 200 (models loaded, galleries preloaded); false after 10 s.
pub fn wait_ready(base: &str, client: &Client) -> bool {
    for _ in 0..200 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
        {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

pub fn setup(data: &Path) {
    facegate(
        data,
        &[
            "gallery",
            "create",
            "g",
            "--purpose",
            "test",
            "--legal-basis",
            "test",
            "--retention-days",
            "30",
            "--search-roles",
            "gate,operator,admin",
        ],
    );
}
