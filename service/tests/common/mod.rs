//! Shared helpers for the service's end-to-end tests: a MovieLens model trained once per
//! test binary, and real `affinity-server` processes on ephemeral ports.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use affinity_core::data::{Dataset, TimeKind};
use affinity_core::model::format;
use affinity_core::model::publish::Retention;
use affinity_core::params::TrainParams;
use affinity_core::train::{train, NoProgress};
use affinity_lab::import::{self, Source};


/// `../shared/datasets/<name>` from the repository root. Missing data fails the test.
pub fn dataset_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets").join(name);
    assert!(dir.is_dir(), "data set missing: {} (tests need ../shared/datasets)", dir.display());
    dir
}

pub fn movielens() -> &'static Dataset {
    static DATA: OnceLock<Dataset> = OnceLock::new();
    DATA.get_or_init(|| import::import(Source::MovieLens, &dataset_dir("movielens-100k")).expect("import MovieLens"))
}

/// A model root holding a model trained on all of MovieLens-100K (scored exactly: a
/// catalogue this small carries no ANN index).
pub fn movielens_model() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| save_movielens("movielens-model", TrainParams::default()))
}

/// The same model forced onto the ANN path (`exact_max_items` 0), so it carries and
/// serves from its HNSW indexes as a large catalogue would.
pub fn movielens_ann_model() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let params = TrainParams {
            exact_max_items: 0,
            ..TrainParams::default()
        };
        save_movielens("movielens-ann-model", params)
    })
}

fn save_movielens(name: &str, params: TrainParams) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&root);
    let mut m = train(movielens(), TimeKind::Unix, &params, &NoProgress);
    format::save(&mut m, &root, Retention::default()).expect("save model");
    root
}

/// A running `affinity-server`, killed on drop.
pub struct Server {
    child: Child,
    /// Kept open so the server's later prints never hit a closed pipe.
    _stdout: BufReader<std::process::ChildStdout>,
    pub addr: String,
    /// `host:port` of the metrics endpoint, when the server was given one.
    pub metrics: Option<String>,
}

impl Server {
    /// Sends SIGTERM and waits up to `within` for the process to exit; its exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let until = std::time::Instant::now() + within;
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL: no shutdown, no flushing, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn server_bin() -> &'static str {
    env!("CARGO_BIN_EXE_affinity-server")
}

/// Starts the server on an ephemeral port and waits until it reports SERVING.
pub async fn start_server(model: &Path) -> Server {
    start_server_with(&["--model".as_ref(), model.as_os_str()], None).await
}

/// Starts the server with `args` (plus `--listen 127.0.0.1:0`) in `cwd` and waits until
/// it reports SERVING.
pub async fn start_server_with(args: &[&std::ffi::OsStr], cwd: Option<&Path>) -> Server {
    let mut cmd = Command::new(server_bin());
    cmd.args(["--listen", "127.0.0.1:0"]).args(args);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    start(cmd).await
}

/// Starts `cmd` (a server command line, possibly behind a shell that sets limits) and
/// waits until it reports SERVING.
pub async fn start(cmd: Command) -> Server {
    start_tls(cmd, None).await
}

/// [`start`] for a TLS server, reached as `https://localhost:PORT` and verified against
/// `ca_pem`.
pub async fn start_tls(cmd: Command, ca_pem: Option<&[u8]>) -> Server {
    let mut server = spawn(cmd);
    if ca_pem.is_some() {
        let port = server.addr.rsplit(':').next().unwrap_or_default().to_string();
        server.addr = format!("https://localhost:{port}");
    }
    affinity_service::client::wait_serving_tls(&server.addr, ca_pem, Duration::from_secs(60))
        .await
        .expect("server becomes healthy");
    server
}

/// Starts `cmd` and reads the addresses it prints (`http://` URL; the metrics address if
/// it has one), without waiting for it to serve.
pub fn spawn(mut cmd: Command) -> Server {
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn affinity-server");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut metrics = None;
    let addr = loop {
        let mut line = String::new();
        let n = stdout.read_line(&mut line).expect("read server output");
        assert!(n > 0, "server exited before listening");
        if let Some(at) = line.trim().strip_prefix("metrics on http://") {
            metrics = at.strip_suffix("/metrics").map(str::to_string);
        }
        if let Some(addr) = line.trim().strip_prefix("listening on ") {
            break addr.to_string();
        }
    };
    Server {
        child,
        _stdout: stdout,
        addr: format!("http://{addr}"),
        metrics,
    }
}

/// Runs the server to completion (for models it must refuse); returns (success, stderr).
pub fn run_server_expecting_exit(model: &Path) -> (bool, String) {
    let out = Command::new(server_bin())
        .args(["--listen", "127.0.0.1:0", "--model"])
        .arg(model)
        .output()
        .expect("run affinity-server");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Copies a directory tree (one level of files is all a model version has).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

