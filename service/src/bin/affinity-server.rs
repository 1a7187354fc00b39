//! `affinity-server`: serves an affinity model over gRPC.
//!
//! `affinity-server --model MODEL_ROOT --listen 127.0.0.1:50051` serves a trained model;
//! `--demo` first trains a model on a built-in synthetic store if the model root holds
//! none; `--smoke` additionally queries the running server, checks the answers and exits.

use std::net::SocketAddr;
use std::path::PathBuf;

use affinity_service::{demo, server};
use anyhow::{Context, Result};
use clap::Parser;
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
#[command(name = "affinity-server", version, about = "Serve affinity recommendations over gRPC")]
struct Args {
    /// Model root (holding `current`) or one version directory.
    #[arg(long, env = "AFFINITY_MODEL")]
    model: Option<PathBuf>,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, env = "AFFINITY_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Train a demo model on a built-in synthetic store if none exists (default model
    /// root: ./affinity-demo-model).
    #[arg(long)]
    demo: bool,
    /// After starting, query the server, check the answers and exit (0 if all is well).
    #[arg(long)]
    smoke: bool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,hnsw_rs=warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(args)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let model_path = match (&args.model, args.demo) {
        (Some(p), _) => p.clone(),
        (None, true) => PathBuf::from("affinity-demo-model"),
        (None, false) => anyhow::bail!("--model is required (or use --demo)"),
    };
    if args.demo {
        let root = model_path.clone();
        let dir = tokio::task::spawn_blocking(move || demo::prepare_model(&root)).await??;
        println!("demo model: {}", dir.display());
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    let url = format!("http://{addr}");
    if args.smoke {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server::run(listener, model_path, async {
            let _ = stopped.await;
        }));
        let checked = tokio::select! {
            r = demo::smoke(&url) => r,
            r = serving_ended(&serving) => r,
        };
        let _ = stop.send(());
        serving.await??;
        return checked;
    }
    if args.demo {
        println!("try it (in another terminal):");
        println!("  cargo run --release --bin affinity-client -- --addr {url} info");
        println!("  cargo run --release --bin affinity-client -- --addr {url} recommend --user user-0001 --k 5");
        println!("  cargo run --release --bin affinity-client -- --addr {url} similar --item sku-0001 --k 5 --mode content");
    }
    server::run(listener, model_path, server::shutdown_signal()).await
}

/// Resolves with an error if the server stops before the smoke check finishes.
async fn serving_ended(serving: &tokio::task::JoinHandle<Result<()>>) -> Result<()> {
    while !serving.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    anyhow::bail!("the server stopped before the smoke check finished")
}
