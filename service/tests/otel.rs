//! With the `otel` feature, the per-RPC spans reach an OpenTelemetry collector: a fake
//! OTLP/gRPC collector on an ephemeral port receives the real server's `rpc` span for a
//! Recommend call, with its method and status. (`cargo test -p affinity-service
//! --features otel --test otel`; CI runs it.)
#![cfg(feature = "otel")]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use affinity_service::proto::recommend_request::Subject;
use affinity_service::proto::recommender_client::RecommenderClient;
use affinity_service::proto::RecommendRequest;
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// Every span received: (name, attributes as text).
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(&self, request: tonic::Request<ExportTraceServiceRequest>) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                for span in scope.spans {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                                Some(Value::StringValue(s)) => s.clone(),
                                Some(other) => format!("{other:?}"),
                                None => String::new(),
                            };
                            (kv.key.clone(), value)
                        })
                        .collect();
                    spans.push((span.name, attributes));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rpc_spans_reach_an_otlp_collector() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));

    let mut cmd = std::process::Command::new(server_bin());
    cmd.args(["--listen", "127.0.0.1:0", "--no-ingest", "--model"])
        .arg(movielens_model())
        .env("AFFINITY__LOG__OTLP_ENDPOINT", format!("http://{at}"));
    let mut server = start(cmd).await;
    let mut client = RecommenderClient::new(affinity_service::client::connect(&server.addr).await.unwrap());
    let request = RecommendRequest { subject: Some(Subject::UserId("1".into())), k: 5, ..Default::default() };
    client.recommend(request).await.unwrap();
    // A clean stop flushes the export.
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(30))).await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let spans = collector.0.lock().unwrap().clone();
    let rpc = spans
        .iter()
        .find(|(name, attrs)| name == "rpc" && attrs.iter().any(|(k, v)| k == "method" && v == "Recommend"))
        .unwrap_or_else(|| panic!("no rpc span for Recommend among {spans:?}"));
    assert!(rpc.1.iter().any(|(k, v)| k == "code" && v == "OK"), "{rpc:?}");
    assert!(rpc.1.iter().any(|(k, _)| k == "request_id"), "{rpc:?}");
}
