//! TLS for the gRPC and HTTP listeners (rustls, TLS 1.2 minimum), optionally requiring client
//! certificates from a CA. The files are re-read when they change ([`Tls::reload_if_changed`]);
//! connections accepted afterwards use the new certificates, open ones keep theirs.
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

/// Where the certificate, its key and the optional client CA live.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        v.extend(self.client_ca.as_deref());
        v
    }
}

/// The server configurations in force, one per listener (they differ in ALPN: `h2` for gRPC,
/// `http/1.1` for the HTTP API).
pub struct Tls {
    files: TlsFiles,
    grpc: RwLock<Arc<ServerConfig>>,
    http: RwLock<Arc<ServerConfig>>,
    stamp: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl Tls {
    pub fn load(files: TlsFiles) -> Result<Tls, String> {
        let stamp = stamp(&files);
        let (grpc, http) = build(&files)?;
        Ok(Tls { files, grpc: RwLock::new(grpc), http: RwLock::new(http), stamp: Mutex::new(stamp) })
    }

    pub fn grpc(&self) -> Arc<ServerConfig> {
        self.grpc.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn http(&self) -> Arc<ServerConfig> {
        self.http.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn requires_client_cert(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Rebuilds both configurations if a file's modification time or size changed. `Ok(false)`:
    /// nothing changed; an error leaves the certificates in force (and is retried on the next
    /// change).
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let now = stamp(&self.files);
        {
            let mut seen = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == now {
                return Ok(false);
            }
            *seen = now;
        }
        let (grpc, http) = build(&self.files)?;
        *self.grpc.write().unwrap_or_else(|e| e.into_inner()) = grpc;
        *self.http.write().unwrap_or_else(|e| e.into_inner()) = http;
        Ok(true)
    }
}

fn stamp(files: &TlsFiles) -> Vec<Option<(SystemTime, u64)>> {
    files.paths().iter().map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}

fn build(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Arc<ServerConfig>), String> {
    let one = |alpn: &[u8]| -> Result<Arc<ServerConfig>, String> {
        let mut c = server_config(files)?;
        c.alpn_protocols = vec![alpn.to_vec()];
        Ok(Arc::new(c))
    };
    Ok((one(b"h2")?, one(b"http/1.1")?))
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert, "server.tls_cert_file")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("server.tls_key_file: cannot read a private key from {}: {e}", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca, "server.tls_client_ca_file")? {
                roots.add(c).map_err(|e| format!("server.tls_client_ca_file: {}: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("server.tls_client_ca_file: {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "server.tls_cert_file and server.tls_key_file: {} with {}: {e}",
            files.cert.display(),
            files.key.display()
        )
    })
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key}: cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key}: {} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}
