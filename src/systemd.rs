//! The systemd notification protocol (`Type=notify`): `READY=1` once the store is replayed and
//! every listener is up, `STOPPING=1` when shutdown begins. A datagram to `$NOTIFY_SOCKET` (a
//! path, or an abstract name written `@name`); nothing happens when it is unset.
use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=value` lines) to the service manager, if any.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let sent = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = target.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &target)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, socket = ?target, "cannot notify the service manager");
    }
}
