//! The OTLP/gRPC receiver's services: thin adapters from [`crate::export::otlp`]'s conversion
//! to [`super::push_acks`], so that OTLP data has the native ingest's authentication (an
//! `ingest` token, limited to its services), admission, limits and acks after the fsync. The
//! answer is OTLP's partial success: items refused by the conversion or by validation are
//! counted in `rejected_*` with the first reasons in `error_message`; a refusal of the whole
//! call (credentials, memory, shutdown) is a gRPC status (RESOURCE_EXHAUSTED carries a
//! RetryInfo, which OTLP exporters honour).
use super::{principal, push_acks, Ctx};
use crate::export::otlp::{self, Converted};
use crate::pb;
use crate::pb::opentelemetry::proto::collector::{logs::v1 as logs, metrics::v1 as metrics, trace::v1 as trace};
use crate::telemetry::T;
use std::sync::Arc;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct OtlpApi(pub Arc<Ctx>);

/// Pushes every batch; returns (rejected, message) for the partial success.
async fn push_all<B>(
    ctx: &Arc<Ctx>,
    who: &crate::server::auth::Principal,
    signal: &str,
    conv: Converted<B>,
    wrap: impl Fn(B) -> pb::PushRequest,
) -> Result<(i64, String), Status> {
    let mut rejected = conv.refused;
    let mut reasons: Vec<String> = conv.notes.iter().map(|(why, n)| format!("{n} × {why}")).collect();
    for b in conv.batches {
        let resp = match push_acks(ctx, who, wrap(b)).await {
            Ok(r) => r,
            Err(e) => {
                T.otlp_requests.add(&[signal, "refused"], 1);
                return Err(e);
            }
        };
        for ack in [resp.metrics, resp.logs, resp.events].into_iter().flatten() {
            rejected += ack.rejected_count;
            for r in ack.rejections.iter().take(3) {
                reasons.push(format!("{}: {}", r.field, r.reason));
            }
        }
    }
    let outcome = if rejected > 0 { "partial" } else { "accepted" };
    T.otlp_requests.add(&[signal, outcome], 1);
    reasons.truncate(10);
    Ok((rejected as i64, reasons.join("; ")))
}

#[tonic::async_trait]
impl metrics::metrics_service_server::MetricsService for OtlpApi {
    async fn export(
        &self,
        req: Request<metrics::ExportMetricsServiceRequest>,
    ) -> Result<Response<metrics::ExportMetricsServiceResponse>, Status> {
        let who = principal(&req);
        let conv = otlp::metrics(req.into_inner());
        let (rejected, msg) =
            push_all(&self.0, &who, "metrics", conv, |b| pb::PushRequest { metrics: Some(b), ..Default::default() })
                .await?;
        let partial_success = (rejected > 0 || !msg.is_empty())
            .then_some(metrics::ExportMetricsPartialSuccess { rejected_data_points: rejected, error_message: msg });
        Ok(Response::new(metrics::ExportMetricsServiceResponse { partial_success }))
    }
}

#[tonic::async_trait]
impl logs::logs_service_server::LogsService for OtlpApi {
    async fn export(
        &self,
        req: Request<logs::ExportLogsServiceRequest>,
    ) -> Result<Response<logs::ExportLogsServiceResponse>, Status> {
        let who = principal(&req);
        let conv = otlp::logs(req.into_inner());
        let (rejected, msg) =
            push_all(&self.0, &who, "logs", conv, |b| pb::PushRequest { logs: Some(b), ..Default::default() }).await?;
        let partial_success = (rejected > 0 || !msg.is_empty())
            .then_some(logs::ExportLogsPartialSuccess { rejected_log_records: rejected, error_message: msg });
        Ok(Response::new(logs::ExportLogsServiceResponse { partial_success }))
    }
}

#[tonic::async_trait]
impl trace::trace_service_server::TraceService for OtlpApi {
    async fn export(
        &self,
        req: Request<trace::ExportTraceServiceRequest>,
    ) -> Result<Response<trace::ExportTraceServiceResponse>, Status> {
        let who = principal(&req);
        let conv = otlp::traces(req.into_inner());
        let (rejected, msg) =
            push_all(&self.0, &who, "traces", conv, |b| pb::PushRequest { events: Some(b), ..Default::default() })
                .await?;
        let partial_success = (rejected > 0 || !msg.is_empty())
            .then_some(trace::ExportTracePartialSuccess { rejected_spans: rejected, error_message: msg });
        Ok(Response::new(trace::ExportTraceServiceResponse { partial_success }))
    }
}
