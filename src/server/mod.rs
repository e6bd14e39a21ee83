//! The daemon's network edge: listeners (TCP, TLS, the local socket), and who may call what
//! over them. `api` (gRPC) and `http` stay thin adapters behind it; both get the caller's
//! [`auth::Principal`] in their request extensions.
//!
//! - [`auth`]: bearer tokens and roles, the role each method and path needs, service limits.
//! - [`tls`]: rustls configurations, reloaded when their files change.
//! - [`listen`]: accept loops and the connection type both servers read.
//! - [`admission`]: ingest refused (RESOURCE_EXHAUSTED, retry delay) above the memory mark.
pub mod admission;
pub mod auth;
pub mod listen;
pub mod tls;

use crate::telemetry::T;
use auth::{grpc_need, http_need, Auth, ConnInfo, Denied};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tonic::codegen::http;

/// Sets the calling thread's niceness (`server.worker_nice`, for the async runtime's threads
/// as they start). On Linux `setpriority(PRIO_PROCESS, 0, …)` applies to the calling thread
/// only; threads it starts later inherit it, and without privileges none can go back below it,
/// so the committer must not be started from such a thread ([`crate::app`] starts it from the
/// thread that runs the runtime, which keeps 0).
pub fn set_thread_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscall on this thread; a failure only leaves the priority as it was.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, nice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

fn reason(d: &Denied) -> &'static str {
    match d {
        Denied::Unauthenticated(_) => "unauthenticated",
        Denied::Forbidden(_) => "forbidden",
    }
}

/// The tower layer that authenticates every gRPC call before tonic routes it.
#[derive(Clone)]
pub struct GrpcAuthLayer(pub Arc<Auth>);

impl<S> tower::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth { inner, auth: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    auth: Arc<Auth>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let need = grpc_need(req.uri().path());
        let conn = req.extensions().get::<ConnInfo>();
        let authz = req.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        match self.auth.check(authz, conn, need) {
            Ok(p) => {
                req.extensions_mut().insert(p);
                Box::pin(self.inner.call(req))
            }
            Err(d) => {
                T.auth_refused.add(&["grpc", reason(&d)], 1);
                tracing::debug!(path = req.uri().path(), refused = d.message(), "gRPC call refused");
                let status: tonic::Status = d.into();
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// The HTTP listener's authentication, as axum middleware: 401 with `WWW-Authenticate: Bearer`
/// or 403, in Prometheus' error JSON.
pub async fn http_auth(
    axum::extract::State(auth): axum::extract::State<Arc<Auth>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let need = http_need(req.uri().path());
    let authz = req.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
    match auth.check(authz, None, need) {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(d) => {
            T.auth_refused.add(&["http", reason(&d)], 1);
            let (code, kind) = match d {
                Denied::Unauthenticated(_) => (http::StatusCode::UNAUTHORIZED, "unauthorized"),
                Denied::Forbidden(_) => (http::StatusCode::FORBIDDEN, "forbidden"),
            };
            let body = serde_json::json!({"status": "error", "errorType": kind, "error": d.message()}).to_string();
            (code, [(http::header::WWW_AUTHENTICATE, "Bearer"), (http::header::CONTENT_TYPE, "application/json")], body)
                .into_response()
        }
    }
}

/// Modification time and size of a file, to notice a change.
fn file_stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Re-reads the tokens file and the TLS files every `interval` when they changed (and on
/// SIGHUP); a file that does not load leaves what is in force, logged and counted.
pub fn spawn_reloader(auth: Arc<Auth>, tls: Option<Arc<tls::Tls>>, interval: Duration, stop: CancellationToken) {
    let tokens: Option<PathBuf> = auth.file().map(Path::to_path_buf);
    if tokens.is_none() && tls.is_none() {
        return;
    }
    tokio::spawn(async move {
        let mut seen = tokens.as_deref().and_then(file_stamp);
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let forced = tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => false,
                _ = hangup => true,
            };
            if let Some(f) = &tokens {
                let now = file_stamp(f);
                if forced || now != seen {
                    seen = now;
                    match auth.reload() {
                        Ok(n) => {
                            T.reloads.add(&["tokens", "reloaded"], 1);
                            tracing::info!(file = %f.display(), tokens = n, "tokens reloaded");
                        }
                        Err(e) => {
                            T.reloads.add(&["tokens", "failed"], 1);
                            tracing::error!(error = %e, "the tokens file did not load; the tokens in force stay");
                        }
                    }
                }
            }
            if let Some(t) = &tls {
                match t.reload_if_changed() {
                    Ok(false) => {}
                    Ok(true) => {
                        T.reloads.add(&["tls", "reloaded"], 1);
                        tracing::info!("TLS certificates reloaded");
                    }
                    Err(e) => {
                        T.reloads.add(&["tls", "failed"], 1);
                        tracing::error!(error = %e, "the TLS files did not load; the certificates in force stay");
                    }
                }
            }
        }
    });
}

/// Binds the local socket, replacing a stale socket file from an earlier run, then sets its
/// mode and group. Between bind and chmod the socket has the umask's mode: the folder's own
/// permissions guard that moment (systemd's `RuntimeDirectoryMode=0750` does).
pub fn bind_unix(path: &Path, mode: u32, group: Option<&str>) -> Result<tokio::net::UnixListener, String> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let shown = path.display();
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(format!("server.unix_socket: {shown} exists and is not a socket; not replacing it"));
        }
        std::fs::remove_file(path).map_err(|e| format!("server.unix_socket: cannot remove the stale {shown}: {e}"))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("server.unix_socket: cannot create {}: {e}", dir.display()))?;
    }
    let l = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("server.unix_socket: cannot listen on {shown}: {e}"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("server.unix_socket_mode: cannot set {mode:o} on {shown}: {e}"))?;
    if let Some(g) = group {
        use std::os::unix::fs::MetadataExt;
        let gid = group_id(g).ok_or_else(|| format!("server.unix_socket_group: no group named {g:?}"))?;
        // Already the daemon's group (the packaged unit's case): no chown, which its system
        // call filter refuses.
        let has = std::fs::metadata(path).map(|m| m.gid()).ok();
        if has != Some(gid) {
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(|e| format!("server.unix_socket_group: cannot give {shown} to group {g}: {e}"))?;
        }
    }
    Ok(l)
}

fn group_id(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    let c = std::ffi::CString::new(name).ok()?;
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the use of `grp`'s fields
    // (only gr_gid, a plain integer, is read).
    let rc = unsafe { libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out) };
    (rc == 0 && !out.is_null()).then_some(grp.gr_gid)
}
