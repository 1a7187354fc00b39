//! Operations end to end, on the real `affinity-server` binary: API keys and roles,
//! metrics counted per method and status code, load shedding at the concurrency limit,
//! draining on SIGTERM, TLS, and configuration errors.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use affinity_service::client::{connect, connect_tls, ApiKey, Keyed};
use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::{self};
use common::*;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const READ: &str = "read-key-0123456789abcdef";
const WRITE: &str = "write-key-0123456789abcdef";
const ADMIN: &str = "admin-key-0123456789abcdef";

fn rec(user: &str, k: u32) -> proto::RecommendRequest {
    proto::RecommendRequest {
        subject: Some(Subject::UserId(user.to_string())),
        k,
        ..Default::default()
    }
}

async fn keyed(server: &Server, key: Option<&str>) -> RecommenderClient<Keyed> {
    let channel = connect(&server.addr).await.unwrap();
    RecommenderClient::with_interceptor(channel, ApiKey::new(key).unwrap())
}

fn server_cmd(model: &std::path::Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(server_bin());
    cmd.args(["--listen", "127.0.0.1:0", "--reload-poll", "0", "--model"]).arg(model).args(extra);
    cmd
}

/// `GET path` on the metrics port of `server`: (status code, body).
async fn http_get(server: &Server, path: &str) -> (u16, String) {
    let at = server.metrics.as_ref().expect("server started with --metrics-listen");
    let mut stream = tokio::net::TcpStream::connect(at).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: metrics\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status line");
    (code, body.to_string())
}

/// The `/metrics` text of `server`.
async fn scrape(server: &Server) -> String {
    let (code, body) = http_get(server, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    body
}

/// `affinity_rpc_requests_total` by (method, code).
fn requests(text: &str) -> HashMap<(String, String), u64> {
    let label = |line: &str, name: &str| {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        Some(line[start..].split('"').next()?.to_string())
    };
    text.lines()
        .filter(|l| l.starts_with("affinity_rpc_requests_total{"))
        .filter_map(|l| Some(((label(l, "method")?, label(l, "code")?), l.rsplit(' ').next()?.parse().ok()?)))
        .collect()
}

/// The status code of a call's result.
fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    r.map(|_| Code::Ok).unwrap_or_else(|s| s.code())
}

fn value(text: &str, metric: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(metric)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_gate_rpcs_by_role_and_metrics_count_each_call_by_method_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let admin_digest = hex::encode(sha2::Sha256::digest(ADMIN.as_bytes()));
    std::fs::write(&keys, format!("read {READ}\nwrite {WRITE}\nadmin sha256:{admin_digest}\n")).unwrap();
    let mut cmd = server_cmd(movielens_model(), &["--no-ingest", "--metrics-listen", "127.0.0.1:0", "--api-keys-file"]);
    cmd.arg(&keys).env("AFFINITY__AUTH__RELOAD_SECS", "1");
    let server = start(cmd).await;
    let before = requests(&scrape(&server).await);

    let mut anonymous = keyed(&server, None).await;
    let mut wrong = keyed(&server, Some("wrong-key-0123456789abcdef")).await;
    let mut read = keyed(&server, Some(READ)).await;
    let mut write = keyed(&server, Some(WRITE)).await;
    let mut admin = keyed(&server, Some(ADMIN)).await;
    let denied = anonymous.recommend(rec("1", 5)).await.unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated);
    assert!(denied.message().contains("API key"), "{}", denied.message());
    assert_eq!(code(wrong.recommend(rec("1", 5)).await), Code::Unauthenticated);
    for _ in 0..3 {
        assert_eq!(code(read.recommend(rec("1", 5)).await), Code::Ok);
    }
    let unknown = proto::SimilarItemsRequest {
        item_id: "no-such-item".into(),
        k: 5,
        ..Default::default()
    };
    assert_eq!(code(read.similar_items(unknown).await), Code::NotFound);
    let refused = read.reload_model(proto::ReloadModelRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(refused.message().contains("`read`") && refused.message().contains("`admin`"), "{}", refused.message());
    let forget = proto::DeleteUserRequest { user_id: "1".into() };
    assert_eq!(code(read.delete_user(forget.clone()).await), Code::PermissionDenied);
    assert_eq!(code(write.list_users(proto::ListUsersRequest::default()).await), Code::PermissionDenied);
    assert_eq!(code(write.recommend(rec("2", 5)).await), Code::Ok, "write includes read");
    assert_eq!(code(admin.model_info(proto::ModelInfoRequest {}).await), Code::Ok);
    assert_eq!(code(admin.reload_model(proto::ReloadModelRequest {}).await), Code::Ok);
    // Health stays open, and so do the HTTP probes.
    let mut health = tonic_health::pb::health_client::HealthClient::new(connect(&server.addr).await.unwrap());
    health.check(tonic_health::pb::HealthCheckRequest::default()).await.unwrap();
    assert_eq!(http_get(&server, "/readyz").await.0, 200);
    assert_eq!(http_get(&server, "/livez").await.0, 200);

    let text = scrape(&server).await;
    let after = requests(&text);
    let delta = |method: &str, code: &str| {
        let key = (method.to_string(), code.to_string());
        after.get(&key).copied().unwrap_or(0) - before.get(&key).copied().unwrap_or(0)
    };
    let expected = [
        ("Recommend", "UNAUTHENTICATED", 2),
        ("Recommend", "OK", 4),
        ("SimilarItems", "NOT_FOUND", 1),
        ("ReloadModel", "PERMISSION_DENIED", 1),
        ("ReloadModel", "OK", 1),
        ("DeleteUser", "PERMISSION_DENIED", 1),
        ("ListUsers", "PERMISSION_DENIED", 1),
        ("ModelInfo", "OK", 1),
        ("grpc.health.v1.Health", "OK", 1),
    ];
    for (method, code, n) in expected {
        assert_eq!(delta(method, code), n, "{method} {code}\n{text}");
    }
    let total: u64 = after.values().sum::<u64>() - before.values().sum::<u64>();
    assert_eq!(total, expected.iter().map(|e| e.2).sum::<u64>(), "no other call counted\n{text}");
    assert_eq!(value(&text, "affinity_model_items"), Some(1682.0));
    // User 1 asked three times, user 2 once: each ranked once, then kept.
    assert_eq!(value(&text, "affinity_ranking_memo_users"), Some(2.0), "{text}");
    assert_eq!(value(&text, "affinity_ranking_memo_misses"), Some(2.0), "{text}");
    assert_eq!(value(&text, "affinity_ranking_memo_hits"), Some(2.0), "{text}");
    assert_eq!(value(&text, "affinity_rpc_in_flight"), Some(0.0));
    assert!(text.contains("affinity_rpc_duration_seconds_count{code=\"OK\",method=\"Recommend\"} 4"), "{text}");
    assert!(text.contains("affinity_model_info{version="), "{text}");
    assert!(!text.contains(READ) && !text.contains(&admin_digest), "no secret in metrics");

    // Rotation: a new file takes effect without a restart.
    std::fs::write(&keys, "read rotated-key-0123456789abcdef\n").unwrap();
    let mut rotated = keyed(&server, Some("rotated-key-0123456789abcdef")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while code(rotated.recommend(rec("1", 5)).await) != Code::Ok {
        assert!(std::time::Instant::now() < deadline, "the rotated key never took effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(code(read.recommend(rec("1", 5)).await), Code::Unauthenticated, "the old key is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_beyond_the_concurrency_limit_is_shed_at_once_and_admitted_calls_succeed() {
    let server = start(server_cmd(
        movielens_model(),
        &["--no-ingest", "--max-concurrent-requests", "2", "--metrics-listen", "127.0.0.1:0"],
    ))
    .await;
    let mut calls = Vec::new();
    for c in 0..4 {
        let client = RecommenderClient::new(connect(&server.addr).await.unwrap());
        for u in 0..100 {
            let mut client = client.clone();
            calls.push(tokio::spawn(async move { client.recommend(rec(&((c * 100 + u) % 900 + 1).to_string(), 200)).await }));
        }
    }
    let mut codes: HashMap<Code, usize> = HashMap::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.into_inner().items.len(), 200);
                *codes.entry(Code::Ok).or_default() += 1;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(s.message().contains("limit of 2"), "{}", s.message());
                *codes.entry(s.code()).or_default() += 1;
            }
        }
    }
    let (ok, shed) = (codes.get(&Code::Ok).copied().unwrap_or(0), codes.get(&Code::ResourceExhausted).copied().unwrap_or(0));
    assert!(ok > 0 && shed > 0, "400 calls at once against 2 slots: {ok} ok, {shed} shed");
    let text = scrape(&server).await;
    assert_eq!(value(&text, "affinity_rpc_shed_total"), Some(shed as f64));
    // Still up and admitting.
    let mut client = RecommenderClient::new(connect(&server.addr).await.unwrap());
    client.recommend(rec("1", 5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_drains_admitted_calls_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = server_cmd(movielens_model(), &["--drain-secs", "10", "--events-dir"]);
    cmd.arg(dir.path());
    let mut server = start(cmd).await;
    // A StreamEvents call admitted before the signal that goes on sending through the
    // drain: every batch must be acknowledged and stored, and the call end cleanly.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let mut streamer = RecommenderClient::new(connect(&server.addr).await.unwrap());
    let mut acks = streamer.stream_events(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let batch = |n: usize| proto::IngestEventsRequest {
        events: vec![proto::IngestEvent {
            user_id: "drain-user".into(),
            item_id: "50".into(),
            event: "view".into(),
            event_id: Some(format!("drain-{n}")),
            ..Default::default()
        }],
    };
    tx.send(batch(0)).await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().stored, 1);
    // Unary load on other connections.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut callers = Vec::new();
    for c in 0..8 {
        let mut client = RecommenderClient::new(connect(&server.addr).await.unwrap());
        let stop = std::sync::Arc::clone(&stop);
        callers.push(tokio::spawn(async move {
            let mut seen: Vec<Result<(), tonic::Status>> = Vec::new();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let r = client.recommend(rec(&((c * 97 + n) % 900 + 1).to_string(), 100)).await;
                let failed = r.is_err();
                seen.push(r.map(|_| ()));
                if failed {
                    break;
                }
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let exited = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(15));
        (status, server)
    });
    // Keep the admitted stream going for a second into the drain, then end it.
    for n in 1..=10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(batch(n)).await.expect("the admitted stream stays open while draining");
        let ack = acks.message().await.expect("acknowledged while draining").expect("an ack");
        assert_eq!(ack.stored, 1, "batch {n}");
    }
    drop(tx);
    assert!(acks.message().await.unwrap().is_none(), "the stream ends cleanly");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (status, _server) = exited.await.unwrap();
    let exit = status.expect("the server exits within its drain time");
    assert!(exit.success(), "exit status {exit:?}");
    assert!(started.elapsed() < Duration::from_secs(11), "exited after {:?}", started.elapsed());
    let logged = affinity_eventlog::read_dir(dir.path(), 1).unwrap();
    assert_eq!(logged.len(), 11, "every acknowledged event is in the log");
    let mut ok = 0;
    for caller in callers {
        for r in caller.await.unwrap() {
            match r {
                Ok(()) => ok += 1,
                // Calls sent as the server stopped accepting fail in the client's transport
                // (GOAWAY, connection closed); none may carry a status the server sent.
                Err(s) => assert!(
                    std::error::Error::source(&s).is_some_and(|e| e.downcast_ref::<tonic::transport::Error>().is_some()),
                    "a call failed with a server status while draining: {s:?}"
                ),
            }
        }
    }
    assert!(ok > 8, "{ok} calls answered before the stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_serves_with_the_configured_certificate_and_the_client_verifies_it() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.key_pair.serialize_pem());
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();
    let mut cmd = server_cmd(movielens_model(), &["--no-ingest", "--tls-cert"]);
    cmd.arg(&cert_file).arg("--tls-key").arg(&key_file);
    let server = start_tls(cmd, Some(cert_pem.as_bytes())).await;
    assert!(server.addr.starts_with("https://localhost:"), "{}", server.addr);
    let channel = connect_tls(&server.addr, Some(cert_pem.as_bytes())).await.unwrap();
    let answer = RecommenderClient::new(channel).recommend(rec("1", 5)).await.unwrap().into_inner();
    assert_eq!(answer.items.len(), 5);
    // A plaintext client gets nowhere.
    let plain = server.addr.replace("https://", "http://");
    let refused = match connect(&plain).await {
        Err(_) => true,
        Ok(ch) => RecommenderClient::new(ch).recommend(rec("1", 5)).await.is_err(),
    };
    assert!(refused, "a plaintext call to a TLS server succeeded");
    // The command-line client verifies against the same CA.
    let out = Command::new(env!("CARGO_BIN_EXE_affinity-client"))
        .args(["--addr", &server.addr, "--tls-ca"])
        .arg(&cert_file)
        .arg("info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn configuration_errors_name_the_key_and_stop_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.toml");
    std::fs::write(&file, "[limits]\nmax_concurent_requests = 8\n").unwrap();
    let out = Command::new(server_bin()).arg("--config").arg(&file).args(["--model", "/nonexistent"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max_concurent_requests") && err.contains("server.toml"), "{err}");
    let out = Command::new(server_bin())
        .args(["--listen", "0.0.0.0:0", "--model", "/nonexistent"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tls.plaintext"));
    // The variables the flags have always read still work, under the file.
    let out = Command::new(server_bin())
        .arg("--config")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/server.toml"))
        .arg("--print-config")
        .env("AFFINITY_LISTEN", "127.0.0.1:7777")
        .env("AFFINITY_MODEL", "/models/x")
        .env("AFFINITY__LIMITS__DRAIN_SECS", "3")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("listen = \"127.0.0.1:7777\"") && printed.contains("model = \"/models/x\"") && printed.contains("drain_secs = 3"), "{printed}");
    // The documented example is a valid configuration.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/server.toml");
    let out = Command::new(server_bin()).arg("--config").arg(&example).arg("--print-config").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn while_a_model_loads_the_process_is_live_but_not_ready() {
    let root = tempfile::tempdir().unwrap();
    let version = affinity_core::model::format::resolve(movielens_model()).unwrap();
    let copy = root.path().join(version.file_name().unwrap());
    copy_dir(&version, &copy);
    // A 1 GiB (sparse) file listed in the manifest keeps the load busy for seconds.
    std::fs::File::create(copy.join("padding.bin")).unwrap().set_len(1 << 30).unwrap();
    let manifest = copy.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["files"]["padding.bin"] = serde_json::json!({ "sha256": "0".repeat(64), "bytes": 1u64 << 30 });
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();

    let server = spawn(server_cmd(&copy, &["--no-ingest", "--metrics-listen", "127.0.0.1:0"]));
    let mut health = tonic_health::pb::health_client::HealthClient::new(connect(&server.addr).await.unwrap());
    let status = |service: &str| tonic_health::pb::HealthCheckRequest { service: service.into() };
    use tonic_health::pb::health_check_response::ServingStatus;
    assert_eq!(health.check(status("")).await.unwrap().into_inner().status, ServingStatus::NotServing as i32);
    assert_eq!(health.check(status("liveness")).await.unwrap().into_inner().status, ServingStatus::Serving as i32);
    assert_eq!(http_get(&server, "/readyz").await.0, 503);
    assert_eq!(http_get(&server, "/livez").await.0, 200);
    let refused = RecommenderClient::new(connect(&server.addr).await.unwrap()).recommend(rec("1", 5)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
}
