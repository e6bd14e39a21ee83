//! A `tracing` layer that ships the service's own `tracing` events as structured logs: level,
//! message, target as logger, the event's fields, and the request id from a `request_id`
//! field on the event or on any enclosing span. Events from the client's own thread and from
//! the gRPC stack it uses are skipped, so shipping never feeds itself.
use crate::{pb, Client};
use std::collections::HashMap;
use std::fmt::Write;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Name of the field (on an event or a span) that carries the request id.
pub const REQUEST_ID_FIELD: &str = "request_id";

pub struct ModelwatchLayer {
    client: Client,
    min_level: Level,
}

impl ModelwatchLayer {
    /// Ships events at `min_level` and above.
    pub fn new(client: Client, min_level: Level) -> ModelwatchLayer {
        ModelwatchLayer { client, min_level }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    request_id: Option<String>,
    error_type: String,
    fields: HashMap<String, String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        self.put(field, s);
    }
}

impl Fields {
    fn put(&mut self, field: &Field, v: String) {
        match field.name() {
            "message" => self.message = v,
            REQUEST_ID_FIELD => self.request_id = Some(v),
            "error_type" => self.error_type = v,
            name => {
                self.fields.insert(name.to_string(), v);
            }
        }
    }
}

/// The request id a span carries, kept in its extensions.
struct SpanRequestId(String);

fn skipped(target: &str) -> bool {
    ["h2", "hyper", "tonic", "tower", "modelwatch_client"].iter().any(|p| target.starts_with(p))
        || std::thread::current().name() == Some("modelwatch-client")
}

impl<S> Layer<S> for ModelwatchLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, id: &tracing::span::Id, ctx: Context<'_, S>) {
        let mut f = Fields::default();
        attrs.record(&mut f);
        if let (Some(rid), Some(span)) = (f.request_id, ctx.span(id)) {
            span.extensions_mut().insert(SpanRequestId(rid));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > self.min_level || skipped(meta.target()) {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let request_id = f.request_id.or_else(|| {
            ctx.event_scope(event)?.find_map(|span| span.extensions().get::<SpanRequestId>().map(|r| r.0.clone()))
        });
        let level = match *meta.level() {
            Level::TRACE => pb::Level::Trace,
            Level::DEBUG => pb::Level::Debug,
            Level::INFO => pb::Level::Info,
            Level::WARN => pb::Level::Warn,
            Level::ERROR => pb::Level::Error,
        };
        self.client.log_record(pb::LogRecord {
            timestamp_ms: 0,
            level: level as i32,
            message: f.message,
            request_id: request_id.unwrap_or_default(),
            error_type: f.error_type,
            fields: f.fields,
            logger: meta.target().to_string(),
            service: String::new(),
        });
    }
}
