//! The gate every RPC passes: who may call it, whether there is room for it, and what
//! it did — as one tower layer in front of every gRPC service.
//!
//! In order, per request: the path gives the method and the role it needs
//! ([`access`]); a method that needs a role needs a key with it ([`keys`]) —
//! UNAUTHENTICATED without a known key, PERMISSION_DENIED with one whose role is too
//! low; then a concurrency slot, refused at once with RESOURCE_EXHAUSTED when all are
//! taken (no unbounded queue: a client retries or another replica answers). Health and
//! reflection are neither gated nor shed. Each request runs in an `rpc` span holding
//! its request id (the caller's `x-request-id`, or a new one, echoed in the response),
//! method and status; the count and latency by method and status code ([`metrics`])
//! are recorded when the status is known: with the response headers for a unary RPC
//! (its message is ready; an error comes as a trailers-only response), and when the last
//! frame — the trailers with `grpc-status` — has been sent for a stream, so streams count
//! in full and one the client abandons counts as CANCELLED.

pub mod access;
pub mod keys;
pub mod metrics;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::{Code, Status};
use tracing::Instrument;

use self::access::{access, Access};
use self::keys::KeyStore;
use self::metrics::Metrics;

/// What the gate needs, shared by every connection.
pub struct Gate {
    keys: Arc<KeyStore>,
    metrics: Arc<Metrics>,
    /// `None`: no concurrency limit.
    slots: Option<Arc<Semaphore>>,
    limit: usize,
    next_id: AtomicU64,
}

impl Gate {
    /// A gate checking `keys`, admitting `max_concurrent` requests at once (0: any
    /// number) and recording into `metrics`.
    pub fn new(keys: Arc<KeyStore>, metrics: Arc<Metrics>, max_concurrent: usize) -> Arc<Gate> {
        Arc::new(Gate {
            keys,
            metrics,
            slots: (max_concurrent > 0).then(|| Arc::new(Semaphore::new(max_concurrent))),
            limit: max_concurrent,
            next_id: AtomicU64::new(1),
        })
    }

    /// Checks the caller's key against what `rule` needs.
    fn authorize(&self, rule: Access, headers: &http::HeaderMap) -> Result<(), Status> {
        let Some(needed) = rule.role else { return Ok(()) };
        let keys = self.keys.keys();
        if keys.is_empty() {
            return Ok(());
        }
        let presented = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")))
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(Status::unauthenticated("an API key is required: send it as `authorization: Bearer KEY` or `x-api-key: KEY`"));
        };
        match keys.role_of(presented) {
            None => Err(Status::unauthenticated("the API key is not recognised")),
            Some(role) if role < needed => Err(Status::permission_denied(format!(
                "this key's role `{role}` may not call {} (needs `{needed}`)",
                rule.label
            ))),
            Some(_) => Ok(()),
        }
    }

    /// A concurrency slot for a gated request; `Ok(None)` for open ones.
    fn admit(&self, rule: Access) -> Result<Option<OwnedSemaphorePermit>, Status> {
        match (&self.slots, rule.role) {
            (Some(slots), Some(_)) => match Arc::clone(slots).try_acquire_owned() {
                Ok(permit) => Ok(Some(permit)),
                Err(_) => {
                    self.metrics.shed.inc();
                    Err(Status::resource_exhausted(format!(
                        "the server is at its limit of {} concurrent requests; retry with backoff",
                        self.limit
                    )))
                }
            },
            _ => Ok(None),
        }
    }

    fn request_id(&self, headers: &http::HeaderMap) -> String {
        match headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
            Some(id) if !id.is_empty() && id.len() <= 128 => id.to_string(),
            _ => format!("{:016x}", self.next_id.fetch_add(1, Ordering::Relaxed)),
        }
    }
}

/// The [`tower::Layer`] putting a [`Gate`] in front of a service.
#[derive(Clone)]
pub struct GateLayer(pub Arc<Gate>);

impl<S> tower::Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> GateService<S> {
        GateService {
            gate: Arc::clone(&self.0),
            inner,
        }
    }
}

/// A service behind the gate.
#[derive(Clone)]
pub struct GateService<S> {
    gate: Arc<Gate>,
    inner: S,
}

impl<S> tower::Service<http::Request<Body>> for GateService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let gate = Arc::clone(&self.gate);
        // The clone that was made ready is the one called (tower's readiness contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let rule = access(request.uri().path());
        let started = Instant::now();
        let request_id = gate.request_id(request.headers());
        let span = tracing::info_span!("rpc", method = rule.label, request_id = %request_id, code = tracing::field::Empty);
        let id_header = http::HeaderValue::from_str(&request_id).ok();
        Box::pin(
            async move {
                let admitted = gate.authorize(rule, request.headers()).and_then(|()| gate.admit(rule));
                let mut response = match admitted {
                    Err(status) => {
                        let done = Done::new(&gate.metrics, rule, started, None, false);
                        let code = status.code();
                        if code == Code::ResourceExhausted {
                            tracing::debug!("shed at the concurrency limit");
                        } else {
                            tracing::info!(message = status.message(), "refused");
                        }
                        done.finish(code);
                        status.into_http::<Body>()
                    }
                    Ok(permit) => {
                        let counted = rule.role.is_some();
                        let done = Done::new(&gate.metrics, rule, started, permit, counted);
                        let response = inner.call(request).await?;
                        // An error answered at once carries its status in the headers (a
                        // trailers-only response: its body is never polled); a unary
                        // RPC's headers without one mean OK (its message is ready). Only
                        // a stream's status waits for its trailers.
                        match (code_of(response.headers()), rule.streaming) {
                            (Some(code), _) => {
                                done.finish(code);
                                response
                            }
                            (None, false) => {
                                done.finish(Code::Ok);
                                response
                            }
                            (None, true) => response.map(|body| Body::new(Metered { inner: body, done: Some(done) })),
                        }
                    }
                };
                if let Some(id) = id_header {
                    response.headers_mut().insert("x-request-id", id);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// The `grpc-status` in `headers`, if any.
fn code_of(headers: &http::HeaderMap) -> Option<Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(Code::from_i32)
}

/// Records one request when it ends (or is dropped unfinished: CANCELLED).
struct Done {
    metrics: Arc<Metrics>,
    rule: Access,
    started: Instant,
    _permit: Option<OwnedSemaphorePermit>,
    in_flight: bool,
    span: tracing::Span,
    finished: bool,
}

impl Done {
    fn new(metrics: &Arc<Metrics>, rule: Access, started: Instant, permit: Option<OwnedSemaphorePermit>, in_flight: bool) -> Done {
        if in_flight {
            metrics.in_flight.inc();
        }
        Done {
            metrics: Arc::clone(metrics),
            rule,
            started,
            _permit: permit,
            in_flight,
            span: tracing::Span::current(),
            finished: false,
        }
    }

    fn finish(mut self, code: Code) {
        self.record(code);
    }

    fn record(&mut self, code: Code) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let seconds = self.started.elapsed().as_secs_f64();
        self.metrics.record(self.rule.slot, self.rule.label, code, seconds);
        if self.in_flight {
            self.metrics.in_flight.dec();
        }
        self.span.record("code", code_name(code));
        let _in = self.span.enter();
        tracing::debug!(seconds, "rpc finished");
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.record(Code::Cancelled);
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its request when its trailers (or its end) pass.
    struct Metered {
        #[pin]
        inner: Body,
        done: Option<Done>,
    }
}

impl HttpBody for Metered {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let polled = std::task::ready!(this.inner.poll_frame(cx));
        let code = match &polled {
            Some(Ok(frame)) => frame.trailers_ref().map(|t| code_of(t).unwrap_or(Code::Ok)),
            Some(Err(_)) => Some(Code::Internal),
            None => Some(Code::Ok),
        };
        if let Some(done) = code.and_then(|_| this.done.take()) {
            done.finish(code.unwrap_or(Code::Ok));
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The canonical upper-case name of a gRPC status code (Prometheus label values).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
