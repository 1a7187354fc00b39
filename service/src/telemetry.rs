//! Optional OpenTelemetry export of the server's spans (one `rpc` span per call, with
//! its request id, method and status), over OTLP/gRPC to a collector; built only with the
//! `otel` feature, so the default server carries none of its dependencies.

use tracing_subscriber::{Layer, Registry};

/// A layer at the bottom of the subscriber stack.
pub type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Flushes and stops the exporter when dropped (at exit).
#[derive(Default)]
pub struct Guard {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: OpenTelemetry export did not flush: {e}");
            }
        }
    }
}

/// The export layer for `endpoint` (none without one). Call inside the async runtime:
/// the exporter's connection runs on it.
///
/// # Errors
/// The exporter cannot be built (a malformed endpoint).
#[cfg(feature = "otel")]
pub fn layer(endpoint: Option<&str>) -> Result<(Option<BoxedLayer>, Guard), String> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    let Some(endpoint) = endpoint else { return Ok((None, Guard::default())) };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("cannot set up OpenTelemetry export to {endpoint}: {e}"))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name("affinity-server").build())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("affinity-server"));
    Ok((Some(layer.boxed()), Guard { provider: Some(provider) }))
}

/// Without the `otel` feature: no layer (configuration validation refuses an endpoint).
///
/// # Errors
/// Never.
#[cfg(not(feature = "otel"))]
pub fn layer(_endpoint: Option<&str>) -> Result<(Option<BoxedLayer>, Guard), String> {
    Ok((None, Guard::default()))
}
