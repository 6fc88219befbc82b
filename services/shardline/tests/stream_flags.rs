//! The CDC stream settings of `shardline replicator` and `shardline edge` are
//! validated before anything starts: a bad value exits 2 naming the setting.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_shardline");

fn exit_and_stderr(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("SHARDLINE_STREAM_REPLICAS")
        .env_remove("SHARDLINE_STREAM_MAX_AGE")
        .env_remove("SHARDLINE_STREAM_MAX_BYTES")
        .output()
        .expect("run shardline");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_stream_settings_exit_2_naming_the_setting() {
    let common = [
        "--nats",
        "nats://127.0.0.1:1",
        "--catalog",
        "postgres://u@127.0.0.1:1/c",
    ];
    for (flags, setting) in [
        (&["--stream-replicas", "0"][..], "stream_replicas"),
        (&["--stream-replicas", "6"][..], "stream_replicas"),
        (&["--stream-max-age", "7"][..], "stream_max_age"),
        (&["--stream-max-age", "1w"][..], "stream_max_age"),
        (&["--stream-max-age", "30s"][..], "stream_max_age"),
        (&["--stream-max-bytes", "0"][..], "stream_max_bytes"),
    ] {
        for cmd in [&["replicator", "--shard", "s1"][..], &["edge"][..]] {
            let args: Vec<&str> = cmd.iter().chain(&common).chain(flags).copied().collect();
            let (code, stderr) = exit_and_stderr(&args);
            assert_eq!(code, Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(&format!("invalid setting `{setting}`")),
                "{args:?}: {stderr}"
            );
        }
    }
}
