//! The `Ingest` service with `StreamMetrics` decoding straight into the store's compact form
//! ([`SeriesBatch`]) instead of prost's generated `MetricBatch`: the generated server fixes
//! each method's message type, so this service answers that one path itself (the same
//! `tonic::server::Grpc` machinery, message size limit and streaming handler) and hands every
//! other path to the generated one.
use super::{ack_stream, principal, Ctx, IngestApi};
use crate::pb::ingest_server::{IngestServer, SERVICE_NAME};
use crate::store::SeriesBatch;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::codegen::{http, Body, StdError};

const STREAM_METRICS: &str = "/modelwatch.v1.Ingest/StreamMetrics";

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

struct StreamMetrics(Arc<Ctx>);

impl tonic::server::StreamingService<SeriesBatch> for StreamMetrics {
    type Response = crate::pb::Ack;
    type ResponseStream = super::AckStream;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<super::AckStream>, tonic::Status>> + Send>>;

    fn call(&mut self, req: tonic::Request<tonic::Streaming<SeriesBatch>>) -> Self::Future {
        let ctx = self.0.clone();
        Box::pin(async move {
            let who = principal(&req);
            Ok(tonic::Response::new(ack_stream(ctx.clone(), who, req.into_inner(), super::metrics_batch)))
        })
    }
}

impl<B> tower::Service<http::Request<B>> for IngestService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != STREAM_METRICS {
            return self.generated.call(req);
        }
        let (ctx, limit) = (self.ctx.clone(), self.max_message_bytes);
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<crate::pb::Ack, SeriesBatch>::default();
            let mut grpc = tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(limit), None);
            Ok(grpc.streaming(StreamMetrics(ctx), req).await)
        })
    }
}
