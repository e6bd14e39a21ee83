//! The listeners: TCP (plain or TLS) and the local Unix socket. Each accept loop hands finished
//! connections (after the TLS handshake, which runs on its own task so that a slow client holds
//! up no one) to a channel that the gRPC or HTTP server reads, together with what the transport
//! knows about the peer ([`ConnInfo`]).
use super::auth::{ConnInfo, PeerCred};
use super::tls::Tls;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

enum Io {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Unix(UnixStream),
}

/// An accepted connection.
pub struct Conn {
    io: Io,
    info: ConnInfo,
}

impl Conn {
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }
}

macro_rules! each_io {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.get_mut().io {
            Io::Tcp($s) => $e,
            Io::Tls($s) => $e,
            Io::Unix($s) => $e,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each_io!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each_io!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_io!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_io!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each_io!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Tcp(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
            Io::Unix(s) => s.is_write_vectored(),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// Which of a [`Tls`]'s configurations a listener serves.
#[derive(Clone, Copy)]
pub enum Alpn {
    Grpc,
    Http,
}

/// Accepts TCP connections until the channel's reader is gone, completing TLS handshakes
/// (with the certificates in force at accept time) when `tls` is set.
pub fn accept_tcp(listener: TcpListener, tls: Option<(Arc<Tls>, Alpn)>, tx: mpsc::Sender<Conn>) {
    tokio::spawn(async move {
        loop {
            let (stream, remote) = tokio::select! {
                _ = tx.closed() => break,
                r = listener.accept() => match r {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, say: wait rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let info = ConnInfo { remote: Some(remote), peer: None, tls: tls.is_some() };
            let Some((tls, alpn)) = &tls else {
                if tx.send(Conn { io: Io::Tcp(stream), info }).await.is_err() {
                    break;
                }
                continue;
            };
            let config = match alpn {
                Alpn::Grpc => tls.grpc(),
                Alpn::Http => tls.http(),
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Conn { io: Io::Tls(Box::new(s)), info }).await;
                    }
                    Ok(Err(e)) => {
                        crate::telemetry::T.tls_handshake_failures.add(1);
                        tracing::info!(%remote, error = %e, "TLS handshake refused");
                    }
                    Err(_) => {
                        crate::telemetry::T.tls_handshake_failures.add(1);
                        tracing::info!(%remote, "TLS handshake timed out");
                    }
                }
            });
        }
    });
}

/// Accepts local-socket connections, recording each peer's credentials.
pub fn accept_unix(listener: UnixListener, tx: mpsc::Sender<Conn>) {
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = tx.closed() => break,
                r = listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept on the local socket failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let peer = match stream.peer_cred() {
                Ok(c) => PeerCred { pid: c.pid(), uid: c.uid(), gid: c.gid() },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the local socket peer's credentials; closing");
                    continue;
                }
            };
            let info = ConnInfo { remote: None, peer: Some(peer), tls: false };
            if tx.send(Conn { io: Io::Unix(stream), info }).await.is_err() {
                break;
            }
        }
    });
}

/// The HTTP server's side of an accept channel.
pub struct HttpIncoming {
    pub rx: mpsc::Receiver<Conn>,
    pub local: SocketAddr,
}

impl axum::serve::Listener for HttpIncoming {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => {
                let remote = c.info.remote.unwrap_or(self.local);
                (c, remote)
            }
            // The accept loop ended: the server is shutting down.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
