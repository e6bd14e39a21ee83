//! Who may do what. A request's principal comes from its bearer token (`authorization: Bearer
//! T` over gRPC metadata or HTTP), looked up by SHA-256 in the tokens file, or, without a token
//! on the local socket, from the socket's configured roles. Each method and path needs one
//! role ([`Need`]); an `ingest` principal may also be limited to services, checked against
//! every service a batch names ([`Pushed`]).
//!
//! Without a tokens file authentication is off: every caller is [`Principal::anyone`] (the
//! safe default is then the loopback listener, see `ServerConfig::check_exposure`).
use crate::pb;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// A role a token carries. `admin` includes `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Ingest,
    Query,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "ingest" => Some(Role::Ingest),
            "query" => Some(Role::Query),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Query => "query",
            Role::Admin => "admin",
        }
    }
}

/// Credentials of the process at the other end of a local socket (SO_PEERCRED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
}

/// What the transport knows about a connection; tonic puts it into every request's extensions.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// Set on the local socket.
    pub peer: Option<PeerCred>,
    /// The connection is TLS (with a verified client certificate when a client CA is set).
    pub tls: bool,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token's name, `local socket` or `anyone` (authentication off).
    pub name: String,
    pub roles: BTreeSet<Role>,
    /// Services an ingest principal may push as; `None`: any.
    pub services: Option<BTreeSet<String>>,
    /// Set on the local socket.
    pub peer: Option<PeerCred>,
}

impl Principal {
    /// Authentication off: every role, every service.
    pub fn anyone() -> Principal {
        Principal {
            name: "anyone".into(),
            roles: [Role::Ingest, Role::Query, Role::Admin].into(),
            services: None,
            peer: None,
        }
    }

    pub fn has(&self, r: Role) -> bool {
        self.roles.contains(&r) || (r == Role::Query && self.roles.contains(&Role::Admin))
    }

    /// Refuses a batch naming a service outside the principal's (the first one, by field).
    pub fn may_push(&self, what: &impl Pushed) -> Result<(), Denied> {
        let Some(allowed) = &self.services else { return Ok(()) };
        match what.outside(allowed) {
            None => Ok(()),
            Some((field, service)) => {
                let list = allowed.iter().map(String::as_str).collect::<Vec<_>>().join(", ");
                let shown = if service.is_empty() { "no service".to_string() } else { format!("service {service:?}") };
                Err(Denied::Forbidden(format!(
                    "{field}: {shown} is not one that {} may push as (it may push as: {list})",
                    self.name
                )))
            }
        }
    }
}

/// Why a request is refused: no or unknown credentials (gRPC UNAUTHENTICATED, HTTP 401), or
/// credentials without the right (PERMISSION_DENIED, 403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Unauthenticated(String),
    Forbidden(String),
}

impl Denied {
    pub fn message(&self) -> &str {
        match self {
            Denied::Unauthenticated(m) | Denied::Forbidden(m) => m,
        }
    }
}

impl From<Denied> for tonic::Status {
    fn from(d: Denied) -> tonic::Status {
        match d {
            Denied::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            Denied::Forbidden(m) => tonic::Status::permission_denied(m),
        }
    }
}

/// What a method or path requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Health checks: no credentials.
    Open,
    /// Reflection: any valid credentials.
    Anyone,
    Role(Role),
}

/// The role a gRPC method needs, from its path `/package.Service/Method`. Unknown methods need
/// `admin`, so a service added later is closed until it is listed here.
pub fn grpc_need(path: &str) -> Need {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match service {
        "grpc.health.v1.Health" => Need::Open,
        "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => Need::Anyone,
        "modelwatch.v1.Ingest"
        | "opentelemetry.proto.collector.metrics.v1.MetricsService"
        | "opentelemetry.proto.collector.logs.v1.LogsService"
        | "opentelemetry.proto.collector.trace.v1.TraceService" => Need::Role(Role::Ingest),
        "modelwatch.v1.Query" => Need::Role(Role::Query),
        "modelwatch.v1.Admin" => Need::Role(Role::Admin),
        "modelwatch.v1.Alerts" => match method {
            "ReloadRules" | "CreateSilence" | "ExpireSilence" => Need::Role(Role::Admin),
            _ => Need::Role(Role::Query),
        },
        _ => Need::Role(Role::Admin),
    }
}

/// The role an HTTP path needs: everything it serves is read-only (`query`) but the liveness
/// and readiness probes.
pub fn http_need(path: &str) -> Need {
    match path {
        "/-/healthy" | "/-/ready" => Need::Open,
        _ => Need::Role(Role::Query),
    }
}

/// One `[[token]]` of the tokens file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    /// Hex SHA-256 of the token (`modelwatch token new` prints it).
    sha256: String,
    role: String,
    #[serde(default)]
    services: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default, rename = "token")]
    tokens: Vec<TokenEntry>,
}

/// The tokens file, parsed: principals by token hash.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
}

impl Tokens {
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let file: TokenFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut by_hash = HashMap::new();
        let mut names = BTreeSet::new();
        for (i, t) in file.tokens.into_iter().enumerate() {
            let at = format!("token[{i}] ({:?})", t.name);
            if t.name.is_empty() {
                return Err(format!("token[{i}].name: is required"));
            }
            if !names.insert(t.name.clone()) {
                return Err(format!("{at}.name: used twice"));
            }
            let hash = parse_hex32(&t.sha256)
                .ok_or_else(|| format!("{at}.sha256: want 64 hex digits (the token's SHA-256), got {:?}", t.sha256))?;
            let role = Role::parse(&t.role)
                .ok_or_else(|| format!("{at}.role: {:?} is not one of ingest, query, admin", t.role))?;
            if !t.services.is_empty() && role != Role::Ingest {
                return Err(format!("{at}.services: only an ingest token is limited to services"));
            }
            let p = Principal {
                name: format!("token {:?}", t.name),
                roles: [role].into(),
                services: (!t.services.is_empty()).then(|| t.services.into_iter().collect()),
                peer: None,
            };
            if by_hash.insert(hash, Arc::new(p)).is_some() {
                return Err(format!("{at}.sha256: the same token is listed twice"));
            }
        }
        Ok(Tokens { by_hash })
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// SHA-256 of a token, the form the tokens file keeps.
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token: `mw_` and 32 random bytes in URL-safe base64.
pub fn new_token() -> Result<String, String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| "the system's random source failed".to_string())?;
    Ok(format!("mw_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// The daemon's authentication state: the tokens in force (`None`: authentication off) and
/// the local socket's principal.
pub struct Auth {
    tokens: Option<RwLock<Arc<Tokens>>>,
    file: Option<PathBuf>,
    local: Arc<Principal>,
    anyone: Arc<Principal>,
}

impl Auth {
    /// Loads the tokens file if one is configured; `local_roles` are what a local-socket client
    /// without a token may do.
    pub fn open(file: Option<&Path>, local_roles: &[Role]) -> Result<Auth, String> {
        let tokens = match file {
            None => None,
            Some(f) => Some(RwLock::new(Arc::new(load(f)?))),
        };
        let local = Principal {
            name: "local socket".into(),
            roles: local_roles.iter().copied().collect(),
            services: None,
            peer: None,
        };
        Ok(Auth {
            tokens,
            file: file.map(Path::to_path_buf),
            local: Arc::new(local),
            anyone: Arc::new(Principal::anyone()),
        })
    }

    /// Authentication off: everyone may do everything.
    pub fn off() -> Auth {
        Auth { tokens: None, file: None, local: Arc::new(Principal::anyone()), anyone: Arc::new(Principal::anyone()) }
    }

    pub fn enabled(&self) -> bool {
        self.tokens.is_some()
    }

    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Re-reads the tokens file; a file that does not parse leaves the tokens in force.
    pub fn reload(&self) -> Result<usize, String> {
        let (Some(lock), Some(f)) = (&self.tokens, &self.file) else { return Ok(0) };
        let t = load(f)?;
        let n = t.len();
        *lock.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(t);
        Ok(n)
    }

    /// The principal behind a request's `authorization` header, then whether it may do `need`.
    pub fn check(
        &self,
        authorization: Option<&[u8]>,
        conn: Option<&ConnInfo>,
        need: Need,
    ) -> Result<Arc<Principal>, Denied> {
        if need == Need::Open {
            return Ok(self.anyone.clone());
        }
        let Some(lock) = &self.tokens else {
            return Ok(match conn.and_then(|c| c.peer) {
                Some(peer) => Arc::new(Principal { peer: Some(peer), ..Principal::anyone() }),
                None => self.anyone.clone(),
            });
        };
        let peer = conn.and_then(|c| c.peer);
        let p = match authorization {
            Some(h) => {
                let token =
                    bearer(h).ok_or_else(|| Denied::Unauthenticated("authorization: want `Bearer <token>`".into()))?;
                let tokens = lock.read().unwrap_or_else(|e| e.into_inner()).clone();
                let found = tokens.by_hash.get(&token_hash(token)).cloned();
                found.ok_or_else(|| Denied::Unauthenticated("authorization: the token is not known".into()))?
            }
            None if peer.is_some() => self.local.clone(),
            None => {
                return Err(Denied::Unauthenticated(
                    "authorization: a bearer token is required (`authorization: Bearer <token>`)".into(),
                ))
            }
        };
        let p = match peer {
            Some(_) => Arc::new(Principal { peer, ..(*p).clone() }),
            None => p,
        };
        match need {
            Need::Open | Need::Anyone if !p.roles.is_empty() => Ok(p),
            Need::Role(r) if p.has(r) => Ok(p),
            Need::Role(r) => Err(Denied::Forbidden(format!(
                "{} has role {} but this needs role {}",
                p.name,
                roles_text(&p.roles),
                r.name()
            ))),
            _ => Err(Denied::Forbidden(format!("{} has no role", p.name))),
        }
    }
}

fn roles_text(r: &BTreeSet<Role>) -> String {
    if r.is_empty() {
        return "none".into();
    }
    r.iter().map(|r| r.name()).collect::<Vec<_>>().join("+")
}

fn bearer(h: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(h).ok()?.trim();
    let (scheme, rest) = s.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim()).filter(|t| !t.is_empty())
}

fn load(f: &Path) -> Result<Tokens, String> {
    let text = std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
    Tokens::parse(&text).map_err(|e| format!("{}: {e}", f.display()))
}

/// A batch that names services: the first (field, service) outside `allowed`, where a service
/// left empty is the batch's and a batch without one names none (refused when limited).
pub trait Pushed {
    fn outside(&self, allowed: &BTreeSet<String>) -> Option<(String, String)>;
}

/// The first service outside `allowed`: an item's own (`items`, by position; `field` names the
/// position's field, formatted only for the one refused) or, for items without one, the batch's.
fn first_outside<'a>(
    allowed: &BTreeSet<String>,
    batch: &'a str,
    items: impl Iterator<Item = Option<&'a str>>,
    field: impl Fn(usize) -> String,
) -> Option<(String, String)> {
    let mut batch_checked = false;
    for (i, own) in items.enumerate() {
        let s = match own.filter(|s| !s.is_empty()) {
            Some(s) => s,
            None if batch_checked => continue,
            None => {
                batch_checked = true;
                if allowed.contains(batch) {
                    continue;
                }
                return Some(("service".into(), batch.into()));
            }
        };
        if !allowed.contains(s) {
            return Some((field(i), s.into()));
        }
    }
    if !batch.is_empty() && !allowed.contains(batch) {
        return Some(("service".into(), batch.into()));
    }
    None
}

impl Pushed for pb::RegisterRequest {
    fn outside(&self, allowed: &BTreeSet<String>) -> Option<(String, String)> {
        (!allowed.contains(&self.service)).then(|| ("service".into(), self.service.clone()))
    }
}

impl Pushed for pb::MetricBatch {
    fn outside(&self, allowed: &BTreeSet<String>) -> Option<(String, String)> {
        let items = self.series.iter().map(|s| s.labels.iter().find(|l| l.name == "service").map(|l| l.value.as_str()));
        first_outside(allowed, &self.service, items, |i| format!("series[{i}].labels.service"))
    }
}

impl Pushed for crate::store::SeriesBatch {
    fn outside(&self, allowed: &BTreeSet<String>) -> Option<(String, String)> {
        let items = self.iter().map(|s| s.labels().find(|(k, _)| *k == "service").map(|(_, v)| v));
        first_outside(allowed, self.service(), items, |i| format!("series[{i}].labels.service"))
    }
}

impl Pushed for pb::LogBatch {
    fn outside(&self, allowed: &BTreeSet<String>) -> Option<(String, String)> {
        let items = self.records.iter().map(|r| Some(r.service.as_str()));
        first_outside(allowed, &self.service, items, |i| format!("records[{i}].service"))
    }
}

impl Pushed for pb::EventBatch {
    fn outside(&self, allowed: &BTreeSet<String>) -> Option<(String, String)> {
        let items = self.events.iter().map(|e| Some(e.service.as_str()));
        first_outside(allowed, &self.service, items, |i| format!("events[{i}].service"))
    }
}

impl Pushed for pb::PushRequest {
    fn outside(&self, allowed: &BTreeSet<String>) -> Option<(String, String)> {
        let pre = |kind: &str, o: Option<(String, String)>| o.map(|(f, s)| (format!("{kind}.{f}"), s));
        pre("metrics", self.metrics.as_ref().and_then(|b| b.outside(allowed)))
            .or_else(|| pre("logs", self.logs.as_ref().and_then(|b| b.outside(allowed))))
            .or_else(|| pre("events", self.events.as_ref().and_then(|b| b.outside(allowed))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens_file(entries: &[(&str, &str, &str, &[&str])]) -> String {
        let mut s = String::new();
        for (name, token, role, services) in entries {
            s += &format!(
                "[[token]]\nname = {name:?}\nsha256 = {:?}\nrole = {role:?}\nservices = {services:?}\n",
                hex(&token_hash(token))
            );
        }
        s
    }

    fn auth(text: &str) -> Auth {
        Auth {
            tokens: Some(RwLock::new(Arc::new(Tokens::parse(text).unwrap()))),
            file: None,
            local: Arc::new(Principal::anyone()),
            anyone: Arc::new(Principal::anyone()),
        }
    }

    #[test]
    fn tokens_carry_their_roles_and_services() {
        let a = auth(&tokens_file(&[
            ("ocr", "t-ocr", "ingest", &["ocr"]),
            ("grafana", "t-q", "query", &[]),
            ("ops", "t-a", "admin", &[]),
        ]));
        let ingest = Need::Role(Role::Ingest);
        let query = Need::Role(Role::Query);
        let admin = Need::Role(Role::Admin);
        let p = a.check(Some(b"Bearer t-ocr"), None, ingest).unwrap();
        assert_eq!(p.services.as_ref().unwrap().len(), 1);
        assert!(matches!(a.check(Some(b"Bearer t-ocr"), None, query), Err(Denied::Forbidden(_))));
        assert!(a.check(Some(b"bearer  t-q "), None, query).is_ok());
        assert!(matches!(a.check(Some(b"Bearer t-q"), None, admin), Err(Denied::Forbidden(_))));
        assert!(a.check(Some(b"Bearer t-a"), None, query).is_ok(), "admin includes query");
        assert!(a.check(Some(b"Bearer t-a"), None, Need::Anyone).is_ok());
        assert!(matches!(a.check(Some(b"Bearer nope"), None, query), Err(Denied::Unauthenticated(_))));
        assert!(matches!(a.check(Some(b"Basic dDp0"), None, query), Err(Denied::Unauthenticated(_))));
        assert!(matches!(a.check(None, None, query), Err(Denied::Unauthenticated(_))));
        assert!(a.check(None, None, Need::Open).is_ok());
    }

    #[test]
    fn a_limited_token_pushes_only_as_its_services() {
        let p = Principal { services: Some(["ocr".to_string()].into()), ..Principal::anyone() };
        let ev = |s: &str| pb::InferenceEvent { service: s.into(), ..Default::default() };
        let ok = pb::EventBatch { service: "ocr".into(), events: vec![ev(""), ev("ocr")], ..Default::default() };
        assert!(p.may_push(&ok).is_ok());
        let bad = pb::EventBatch { service: "ocr".into(), events: vec![ev(""), ev("mgeo")], ..Default::default() };
        let e = p.may_push(&bad).unwrap_err();
        assert!(e.message().starts_with("events[1].service: service \"mgeo\""), "{e:?}");
        let other = pb::EventBatch { service: "mgeo".into(), events: vec![ev("ocr")], ..Default::default() };
        assert!(p.may_push(&other).unwrap_err().message().starts_with("service:"));
        let unnamed = pb::LogBatch { records: vec![pb::LogRecord::default()], ..Default::default() };
        assert!(p.may_push(&unnamed).unwrap_err().message().contains("no service"));
        let label = |v: &str| pb::Label { name: "service".into(), value: v.into() };
        let m = pb::MetricBatch {
            service: "ocr".into(),
            series: vec![pb::Series { labels: vec![label("mgeo")], ..Default::default() }],
            ..Default::default()
        };
        assert!(p.may_push(&m).unwrap_err().message().starts_with("series[0].labels.service"));
        let push = pb::PushRequest { events: Some(bad), ..Default::default() };
        assert!(p.may_push(&push).unwrap_err().message().starts_with("events.events[1].service"));
        assert!(Principal::anyone().may_push(&push).is_ok());
    }

    #[test]
    fn a_bad_tokens_file_names_the_entry_and_field() {
        let e = Tokens::parse("[[token]]\nname = \"a\"\nsha256 = \"xyz\"\nrole = \"ingest\"\n").unwrap_err();
        assert!(e.starts_with("token[0] (\"a\").sha256"), "{e}");
        let e = Tokens::parse(&tokens_file(&[("a", "t", "root", &[])])).unwrap_err();
        assert!(e.contains(".role: \"root\""), "{e}");
        let e = Tokens::parse(&tokens_file(&[("a", "t", "query", &["ocr"])])).unwrap_err();
        assert!(e.contains(".services"), "{e}");
        let e = Tokens::parse(&tokens_file(&[("a", "t", "query", &[]), ("b", "t", "query", &[])])).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn methods_and_paths_need_their_roles() {
        assert_eq!(grpc_need("/modelwatch.v1.Ingest/StreamEvents"), Need::Role(Role::Ingest));
        assert_eq!(grpc_need("/modelwatch.v1.Query/Eval"), Need::Role(Role::Query));
        assert_eq!(grpc_need("/modelwatch.v1.Alerts/ListRules"), Need::Role(Role::Query));
        assert_eq!(grpc_need("/modelwatch.v1.Alerts/CreateSilence"), Need::Role(Role::Admin));
        assert_eq!(grpc_need("/grpc.health.v1.Health/Check"), Need::Open);
        assert_eq!(grpc_need("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), Need::Anyone);
        assert_eq!(grpc_need("/some.Other/Thing"), Need::Role(Role::Admin));
        assert_eq!(http_need("/api/v1/query"), Need::Role(Role::Query));
        assert_eq!(http_need("/-/healthy"), Need::Open);
    }
}
