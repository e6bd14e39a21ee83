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
