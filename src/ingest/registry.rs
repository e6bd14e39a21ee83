//! Who is pushing: registered services and clients that push without registering, with
//! last-seen times. Samplers use it to attribute processes (pids) to services.
use crate::pb;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

/// Who is pushing: registered services (and clients that push without registering), with
/// last-seen times. Samplers use it to attribute processes (pids) to services.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<HashMap<String, Client>>,
}

#[derive(Clone, Debug)]
pub struct Client {
    pub info: pb::RegisterRequest,
    pub last_seen: SystemTime,
    pub open_streams: u32,
    /// (uid, gid) of a client registered over the local socket.
    pub peer: Option<(u32, u32)>,
}

impl Registry {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Client>) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records a registration; returns the client id (the given one, else derived from the
    /// service identity, so a reconnecting process gets the same id).
    pub fn register(&self, info: pb::RegisterRequest) -> String {
        self.register_peer(info, None)
    }

    /// [`Registry::register`] for a client on the local socket, whose uid and gid are known.
    pub fn register_peer(&self, mut info: pb::RegisterRequest, peer: Option<(u32, u32)>) -> String {
        if info.client_id.is_empty() {
            info.client_id = format!("{}/{}/{}/{}", info.service, info.instance, info.host, info.pid);
        }
        let id = info.client_id.clone();
        self.with(|m| {
            let open = m.get(&id).map_or(0, |c| c.open_streams);
            m.insert(id.clone(), Client { info, last_seen: SystemTime::now(), open_streams: open, peer });
        });
        id
    }

    /// Notes a batch from `client_id` (registering it by service name if unknown).
    pub fn seen(&self, client_id: &str, service: &str) {
        if client_id.is_empty() {
            return;
        }
        self.with(|m| {
            let c = m.entry(client_id.to_string()).or_insert_with(|| Client {
                info: pb::RegisterRequest {
                    client_id: client_id.into(),
                    service: service.into(),
                    ..Default::default()
                },
                last_seen: SystemTime::now(),
                open_streams: 0,
                peer: None,
            });
            c.last_seen = SystemTime::now();
        });
    }

    pub fn stream_opened(&self, client_id: &str, service: &str, delta: i32) {
        if client_id.is_empty() {
            return;
        }
        self.seen(client_id, service);
        self.with(|m| {
            if let Some(c) = m.get_mut(client_id) {
                c.open_streams = c.open_streams.saturating_add_signed(delta);
            }
        });
    }

    /// Forgets clients last seen before `before_ms` with no stream open; returns how many.
    pub fn expire(&self, before_ms: i64) -> usize {
        let before = std::time::UNIX_EPOCH + std::time::Duration::from_millis(before_ms.max(0) as u64);
        self.with(|m| {
            let n = m.len();
            m.retain(|_, c| c.open_streams > 0 || c.last_seen >= before);
            n - m.len()
        })
    }

    pub fn clients(&self) -> Vec<Client> {
        let mut v: Vec<Client> = self.with(|m| m.values().cloned().collect());
        v.sort_by(|a, b| a.info.client_id.cmp(&b.info.client_id));
        v
    }
}
