//! Client-side helpers shared by `affinity-client`, the tests and the benchmarks:
//! connecting the way every client should, and waiting for a server to serve.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Opens a channel to `addr` (`http://host:port`).
///
/// # Errors
/// The address is malformed or nothing accepts the connection.
pub async fn connect(addr: &str) -> Result<Channel> {
    Channel::from_shared(addr.to_string())
        .with_context(|| format!("invalid address {addr}"))?
        // Small unary calls: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms each.
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

/// Waits until the server at `addr` reports SERVING on the gRPC health check.
///
/// # Errors
/// It does not within `timeout`.
pub async fn wait_serving(addr: &str, timeout: Duration) -> Result<Channel> {
    let start = Instant::now();
    loop {
        if let Ok(channel) = connect(addr).await {
            let mut health = HealthClient::new(channel.clone());
            if let Ok(r) = health.check(HealthCheckRequest { service: String::new() }).await {
                if r.into_inner().status == ServingStatus::Serving as i32 {
                    return Ok(channel);
                }
            }
        }
        if start.elapsed() > timeout {
            bail!("server at {addr} did not report SERVING within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
