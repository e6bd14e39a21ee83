//! The CLI's connection to a daemon: one channel with the caller's credentials, from the
//! environment so that they stay out of shell history and `ps`:
//! - `MODELWATCH_TOKEN`: a bearer token, sent on every call;
//! - an `https://` address: TLS, trusting `MODELWATCH_CA_FILE` (PEM) if set, else the
//!   system's roots; `MODELWATCH_CLIENT_CERT` and `MODELWATCH_CLIENT_KEY` (PEM) for a daemon
//!   that requires client certificates.
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

/// What the CLI's generated clients run over.
pub type Conn = InterceptedService<Channel, Bearer>;

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

fn read(var: &str, path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{var}: cannot read {path}: {e}"))
}

/// Connects to `addr`: `host:port`, a URL (`https://` for TLS), or `unix:/path/to.sock`.
pub async fn connect(addr: &str) -> Result<Conn, String> {
    let url =
        if addr.contains("://") || addr.starts_with("unix:") { addr.to_string() } else { format!("http://{addr}") };
    let mut ep = Endpoint::from_shared(url.clone()).map_err(|e| format!("{url}: {e}"))?;
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        match env("MODELWATCH_CA_FILE") {
            Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read("MODELWATCH_CA_FILE", &ca)?)),
            None => tls = tls.with_enabled_roots(),
        }
        match (env("MODELWATCH_CLIENT_CERT"), env("MODELWATCH_CLIENT_KEY")) {
            (Some(c), Some(k)) => {
                tls = tls.identity(Identity::from_pem(
                    read("MODELWATCH_CLIENT_CERT", &c)?,
                    read("MODELWATCH_CLIENT_KEY", &k)?,
                ))
            }
            (None, None) => {}
            _ => return Err("MODELWATCH_CLIENT_CERT and MODELWATCH_CLIENT_KEY go together".into()),
        }
        ep = ep.tls_config(tls).map_err(|e| format!("TLS for {url}: {e}"))?;
    }
    let token = match env("MODELWATCH_TOKEN") {
        Some(t) => Some(
            format!("Bearer {t}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| "MODELWATCH_TOKEN: not a valid header value")?,
        ),
        None => None,
    };
    let channel = ep.connect().await.map_err(|e| {
        let mut s = format!("cannot reach the daemon at {url}: {e}");
        let mut src = std::error::Error::source(&e);
        while let Some(c) = src {
            s += &format!(": {c}");
            src = c.source();
        }
        s
    })?;
    Ok(InterceptedService::new(channel, Bearer(token)))
}

/// A codec that sends requests already protobuf-encoded, as they are, and decodes acks: the
/// load generator and the ingest benchmark encode a batch once (before the clock, or once per
/// batch instead of a clone and an encode).
#[derive(Clone, Copy)]
pub struct RawCodec;

pub struct RawEncoder;

pub struct AckDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = prost::bytes::Bytes;
    type Decode = crate::pb::Ack;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = prost::bytes::Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: prost::bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for AckDecoder {
    type Item = crate::pb::Ack;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<crate::pb::Ack>, tonic::Status> {
        prost::Message::decode(src).map(Some).map_err(|e| tonic::Status::internal(format!("ack: {e}")))
    }
}

/// Opens an ingest stream (`path`: `/modelwatch.v1.Ingest/StreamMetrics`, `…/StreamEvents`,
/// `…/StreamLogs`) that sends the encoded batches `rx` yields.
pub async fn raw_stream<S>(
    conn: Conn,
    path: &'static str,
    rx: S,
) -> Result<tonic::Streaming<crate::pb::Ack>, tonic::Status>
where
    S: tokio_stream::Stream<Item = prost::bytes::Bytes> + Send + 'static,
{
    let mut grpc = tonic::client::Grpc::new(conn).max_encoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unknown(format!("channel not ready: {}", tonic::codegen::StdError::from(e))))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    Ok(grpc.streaming(tonic::Request::new(rx), path, RawCodec).await?.into_inner())
}
