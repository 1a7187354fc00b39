//! Client-side helpers shared by `affinity-client`, the tests and the benchmarks:
//! connecting the way every client should (TLS when the address is `https://`, the API
//! key on every call), and waiting for a server to serve.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
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

/// Opens a channel to `addr`; an `https://` address is verified against `ca_pem` (a PEM
/// CA certificate; `None`: the platform's roots are not bundled, so one must be given).
///
/// # Errors
/// The address is malformed, the CA unreadable, or nothing accepts the connection.
pub async fn connect_tls(addr: &str, ca_pem: Option<&[u8]>) -> Result<Channel> {
    let Some(ca) = ca_pem else { return connect(addr).await };
    let endpoint = Channel::from_shared(addr.to_string()).with_context(|| format!("invalid address {addr}"))?;
    let host = endpoint.uri().host().unwrap_or("localhost").to_string();
    endpoint
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name(host))
        .context("invalid TLS configuration")?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))
}

/// Adds the API key (if any) to every call as `authorization: Bearer KEY`.
#[derive(Clone, Default)]
pub struct ApiKey(Option<MetadataValue<Ascii>>);

impl ApiKey {
    /// `key` for every call (`None`: no key is sent).
    ///
    /// # Errors
    /// The key holds characters a header cannot carry.
    pub fn new(key: Option<&str>) -> Result<ApiKey> {
        key.map(|k| format!("Bearer {k}").parse::<MetadataValue<Ascii>>().context("the API key holds characters a header cannot carry"))
            .transpose()
            .map(ApiKey)
    }
}

impl tonic::service::Interceptor for ApiKey {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            request.metadata_mut().insert("authorization", key.clone());
        }
        Ok(request)
    }
}

/// A channel that sends the API key with every call.
pub type Keyed = InterceptedService<Channel, ApiKey>;

/// Waits until the server at `addr` reports SERVING on the gRPC health check.
///
/// # Errors
/// It does not within `timeout`.
pub async fn wait_serving(addr: &str, timeout: Duration) -> Result<Channel> {
    wait_serving_tls(addr, None, timeout).await
}

/// [`wait_serving`] over TLS verified against `ca_pem` (see [`connect_tls`]).
///
/// # Errors
/// It does not within `timeout`.
pub async fn wait_serving_tls(addr: &str, ca_pem: Option<&[u8]>, timeout: Duration) -> Result<Channel> {
    let start = Instant::now();
    loop {
        if let Ok(channel) = connect_tls(addr, ca_pem).await {
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
