//! The `Ingest` service with its three stream paths served here and every other path handed to
//! the generated service. The stream paths read their messages straight from the request body
//! ([`BodyMessages`]: no buffer held between messages), and `StreamMetrics` decodes into the
//! store's compact form ([`SeriesBatch`]) instead of prost's generated `MetricBatch` (the
//! generated server fixes each method's message type). Acks go back through tonic's encoder,
//! as from a generated streaming method.
use super::inbound::{unsupported_encoding, BodyMessages};
use super::{ack_stream, caller, events_batch, logs_batch, metrics_batch, AckStream, Ctx, IngestApi};
use crate::pb::{self, ingest_server::IngestServer, ingest_server::SERVICE_NAME};
use crate::store::SeriesBatch;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codec::{Codec, EncodeBody, SingleMessageCompressionOverride};
use tonic::codegen::{http, Body, StdError};

const STREAM_METRICS: &str = "/modelwatch.v1.Ingest/StreamMetrics";
const STREAM_LOGS: &str = "/modelwatch.v1.Ingest/StreamLogs";
const STREAM_EVENTS: &str = "/modelwatch.v1.Ingest/StreamEvents";

#[derive(Clone)]
pub struct IngestService {
    generated: IngestServer<IngestApi>,
    ctx: Arc<Ctx>,
    max_message_bytes: usize,
}

impl IngestService {
    pub fn new(ctx: Arc<Ctx>, max_message_bytes: usize) -> IngestService {
        let generated = IngestServer::new(IngestApi(ctx.clone())).max_decoding_message_size(max_message_bytes);
        IngestService { generated, ctx, max_message_bytes }
    }
}

impl tonic::server::NamedService for IngestService {
    const NAME: &'static str = SERVICE_NAME;
}

/// The answer to a stream call: the acks, gRPC-framed, and the status in the trailers.
fn respond(acks: AckStream) -> http::Response<tonic::body::Body> {
    let encoder = tonic_prost::ProstCodec::<pb::Ack, pb::Ack>::default().encoder();
    let body = EncodeBody::new_server(encoder, acks, None, SingleMessageCompressionOverride::default(), None);
    let mut r = http::Response::new(tonic::body::Body::new(body));
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
    r
}

impl<B> tower::Service<http::Request<B>> for IngestService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        if ![STREAM_METRICS, STREAM_LOGS, STREAM_EVENTS].contains(&path) {
            return self.generated.call(req);
        }
        let path = path.to_string();
        let (ctx, limit) = (self.ctx.clone(), self.max_message_bytes);
        Box::pin(async move {
            if let Some(s) = unsupported_encoding(req.headers()) {
                return Ok(s.into_http());
            }
            let (parts, body) = req.into_parts();
            let who = caller(parts.extensions.get());
            let acks = match path.as_str() {
                STREAM_METRICS => ack_stream(ctx, who, BodyMessages::<_, SeriesBatch>::new(body, limit), metrics_batch),
                STREAM_LOGS => ack_stream(ctx, who, BodyMessages::<_, pb::LogBatch>::new(body, limit), logs_batch),
                _ => ack_stream(ctx, who, BodyMessages::<_, pb::EventBatch>::new(body, limit), events_batch),
            };
            Ok(respond(acks))
        })
    }
}
