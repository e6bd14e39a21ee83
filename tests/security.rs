//! Who may do what, on the real daemon: bearer tokens with roles and service limits on every
//! gRPC method and HTTP path, TLS with client certificates (made here with rcgen) and their
//! reload, and the local socket with its peer's credentials.
mod common;
use common::*;
use modelwatch::pb;
use modelwatch::pb::ingest_client::IngestClient;
use modelwatch::pb::query_client::QueryClient;
use modelwatch::server::auth::{hex, token_hash};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

const OCR: &str = "tok-ocr-ingest";
const ANY_INGEST: &str = "tok-any-ingest";
const QUERY: &str = "tok-grafana";
const ADMIN: &str = "tok-ops";

fn tokens_toml(entries: &[(&str, &str, &str, &[&str])]) -> String {
    entries
        .iter()
        .map(|(name, tok, role, services)| {
            format!(
                "[[token]]\nname = {name:?}\nsha256 = {:?}\nrole = {role:?}\nservices = {services:?}\n\n",
                hex(&token_hash(tok))
            )
        })
        .collect()
}

fn write_tokens(path: &Path) {
    let text = tokens_toml(&[
        ("ocr", OCR, "ingest", &["ocr"]),
        ("ingest", ANY_INGEST, "ingest", &[]),
        ("grafana", QUERY, "query", &[]),
        ("ops", ADMIN, "admin", &[]),
    ]);
    std::fs::write(path, text).unwrap();
}

fn with_token<T>(mut r: tonic::Request<T>, token: Option<&str>) -> tonic::Request<T> {
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// Every method of the daemon's own services, from its descriptor set, so that one added later
/// is covered too.
fn all_methods() -> Vec<(String, bool)> {
    let pool = prost_reflect::DescriptorPool::decode(modelwatch::pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for s in pool.services() {
        for m in s.methods() {
            out.push((format!("/{}/{}", s.full_name(), m.name()), m.is_client_streaming()));
        }
    }
    assert!(out.len() > 25, "{out:?}");
    out
}

/// The role each method needs, as the README's security table says.
fn role_of(path: &str) -> &'static str {
    // The OTLP receiver's services are ingest, like the native ones.
    if path.starts_with("/modelwatch.v1.Ingest/") || path.starts_with("/opentelemetry.proto.collector.") {
        "ingest"
    } else if path.starts_with("/modelwatch.v1.Admin/")
        || ["ReloadRules", "CreateSilence", "ExpireSilence"].iter().any(|m| path.ends_with(&format!("/{m}")))
    {
        "admin"
    } else {
        "query"
    }
}

/// Calls `path` with an empty message (all the authentication layer needs to decide).
async fn raw_call(ch: &Channel, path: &str, token: Option<&str>) -> Code {
    let mut g = tonic::client::Grpc::new(ch.clone());
    g.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path.to_string()).unwrap();
    let r = with_token(tonic::Request::new(()), token);
    match tokio::time::timeout(Duration::from_secs(20), g.unary(r, path, codec)).await {
        Ok(Ok(_)) => Code::Ok,
        Ok(Err(s)) => s.code(),
        Err(_) => Code::DeadlineExceeded,
    }
}

fn event(service: &str, model: &str, id: &str) -> pb::InferenceEvent {
    pb::InferenceEvent {
        timestamp_ms: now_ms(),
        service: service.into(),
        model: model.into(),
        request_id: id.into(),
        latency_us: 1000,
        status: pb::Status::Ok as i32,
        ..Default::default()
    }
}

async fn count(q: &mut QueryClient<Channel>, token: &str, expr: &str) -> f64 {
    let r = q
        .eval(with_token(
            tonic::Request::new(pb::EvalRequest { query: expr.into(), ..Default::default() }),
            Some(token),
        ))
        .await
        .unwrap()
        .into_inner();
    r.series.first().and_then(|s| s.points.first()).map_or(0.0, |p| p.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles_guard_every_method_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    write_tokens(&tokens);
    let d = Daemon::start(
        &dir.path().join("data"),
        &[
            ("MODELWATCH__SERVER__TOKENS_FILE", tokens.to_str().unwrap()),
            ("MODELWATCH__SERVER__RELOAD_INTERVAL", "100ms"),
        ],
    );
    let ch = Endpoint::from_shared(d.url()).unwrap().connect().await.unwrap();

    // Every method: no token and an unknown one are UNAUTHENTICATED, a token of another role
    // PERMISSION_DENIED, the right role gets past authentication (its empty message may then
    // be refused for what it lacks).
    for (path, _) in all_methods() {
        assert_eq!(raw_call(&ch, &path, None).await, Code::Unauthenticated, "{path} without a token");
        assert_eq!(raw_call(&ch, &path, Some("not-a-token")).await, Code::Unauthenticated, "{path}");
        let (right, wrong) = match role_of(&path) {
            "ingest" => (ANY_INGEST, QUERY),
            "query" => (QUERY, ANY_INGEST),
            _ => (ADMIN, QUERY),
        };
        assert_eq!(raw_call(&ch, &path, Some(wrong)).await, Code::PermissionDenied, "{path} with the wrong role");
        let c = raw_call(&ch, &path, Some(right)).await;
        assert!(!matches!(c, Code::Unauthenticated | Code::PermissionDenied), "{path} with the right role: {c:?}");
    }
    // Health is open (probes); reflection needs any valid token.
    assert_eq!(raw_call(&ch, "/grpc.health.v1.Health/Check", None).await, Code::Ok);
    let reflect = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
    assert_eq!(raw_call(&ch, reflect, None).await, Code::Unauthenticated);
    assert!(!matches!(raw_call(&ch, reflect, Some(ANY_INGEST)).await, Code::Unauthenticated | Code::PermissionDenied));

    // Data: refused pushes store nothing, in every form.
    let mut ingest = IngestClient::new(ch.clone());
    let push = |service: &str, model: &str| pb::PushRequest {
        events: Some(pb::EventBatch {
            service: service.into(),
            events: vec![event("", model, model)],
            ..Default::default()
        }),
        ..Default::default()
    };
    for (token, code) in
        [(None, Code::Unauthenticated), (Some(QUERY), Code::PermissionDenied), (Some(OCR), Code::PermissionDenied)]
    {
        let e = ingest.push(with_token(tonic::Request::new(push("mgeo", "refused")), token)).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
    }
    let e = ingest.push(with_token(tonic::Request::new(push("mgeo", "refused")), Some(OCR))).await.unwrap_err();
    assert!(e.message().contains("service \"mgeo\"") && e.message().contains("ocr"), "{}", e.message());
    // One event of another service in an otherwise good stream batch ends the stream, and the
    // batch is not stored.
    let batch = pb::EventBatch {
        service: "ocr".into(),
        seq: 1,
        events: vec![event("", "refused", "r1"), event("mgeo", "refused", "r2")],
        ..Default::default()
    };
    let mut acks = ingest
        .stream_events(with_token(tonic::Request::new(tokio_stream::iter(vec![batch])), Some(OCR)))
        .await
        .unwrap()
        .into_inner();
    let e = acks.message().await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().starts_with("events[1].service"), "{}", e.message());
    let reg = pb::RegisterRequest { service: "mgeo".into(), ..Default::default() };
    let e = ingest.register(with_token(tonic::Request::new(reg), Some(OCR))).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // OTLP has the same service limits: a resource named mgeo is refused for the ocr token,
    // one named ocr is taken.
    {
        use modelwatch::pb::opentelemetry::proto::collector::metrics::v1 as otm;
        use modelwatch::pb::opentelemetry::proto::common::v1::{any_value, AnyValue, KeyValue, Resource};
        let export = |service: &str| otm::ExportMetricsServiceRequest {
            resource_metrics: vec![otm::ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue { value: Some(any_value::Value::StringValue(service.into())) }),
                    }],
                    dropped_attributes_count: 0,
                }),
                scope_metrics: vec![otm::ScopeMetrics {
                    scope: None,
                    metrics: vec![otm::Metric {
                        name: "otlp_gauge".into(),
                        data: Some(otm::metric::Data::Gauge(otm::Gauge {
                            data_points: vec![otm::NumberDataPoint {
                                time_unix_nano: now_ms() as u64 * 1_000_000,
                                value: Some(otm::number_data_point::Value::AsDouble(1.0)),
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let mut otlp = otm::metrics_service_client::MetricsServiceClient::new(ch.clone());
        let e = otlp.export(with_token(tonic::Request::new(export("mgeo")), Some(OCR))).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let e = otlp.export(tonic::Request::new(export("ocr"))).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        otlp.export(with_token(tonic::Request::new(export("ocr")), Some(OCR))).await.unwrap();
        let mut q = QueryClient::new(ch.clone());
        assert_eq!(count(&mut q, QUERY, "count(otlp_gauge{service=\"mgeo\"})").await, 0.0);
        assert_eq!(count(&mut q, QUERY, "count(otlp_gauge{service=\"ocr\"})").await, 1.0);
    }
    // The right credentials: stored.
    ingest.push(with_token(tonic::Request::new(push("ocr", "accepted")), Some(OCR))).await.unwrap();
    let series = vec![series("gpu_util", &[], vec![now_ms()], vec![1.0])];
    let m = pb::PushRequest {
        metrics: Some(pb::MetricBatch { service: "ocr".into(), series, ..Default::default() }),
        ..Default::default()
    };
    ingest.push(with_token(tonic::Request::new(m), Some(OCR))).await.unwrap();
    let mut q = QueryClient::new(ch.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(&mut q, QUERY, "count(gpu_util)").await < 1.0 {
        assert!(Instant::now() < deadline, "the accepted sample never showed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let raw = q
        .get_request(with_token(
            tonic::Request::new(pb::GetRequestRequest { request_id: "accepted".into() }),
            Some(QUERY),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(raw.events.len(), 1);
    for id in ["refused", "r1", "r2"] {
        let r = q
            .get_request(with_token(tonic::Request::new(pb::GetRequestRequest { request_id: id.into() }), Some(ADMIN)))
            .await
            .unwrap()
            .into_inner();
        assert!(r.events.is_empty(), "{id} was stored");
    }

    // HTTP: every path.
    let http = reqwest::Client::new();
    let base = format!("http://{}", d.http_addr);
    let paths = [
        "/api/v1/query?query=1",
        "/api/v1/query_range?query=1&start=0&end=60&step=15",
        "/api/v1/series?match[]=up",
        "/api/v1/labels",
        "/api/v1/label/__name__/values",
        "/api/v1/metadata",
        "/api/v1/query_exemplars?query=up",
        "/api/v1/status/buildinfo",
        "/metrics",
        "/",
        "/report/service",
        "/no/such/path",
    ];
    for p in paths {
        let get = |token: Option<&str>| {
            let mut r = http.get(format!("{base}{p}"));
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            r.send()
        };
        let r = get(None).await.unwrap();
        assert_eq!(r.status(), 401, "{p}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(body["errorType"], "unauthorized", "{body}");
        assert_eq!(get(Some("nope")).await.unwrap().status(), 401, "{p}");
        assert_eq!(get(Some(OCR)).await.unwrap().status(), 403, "{p}");
        let s = get(Some(QUERY)).await.unwrap().status();
        assert!(s != 401 && s != 403, "{p}: {s}");
        let post = http.post(format!("{base}{p}")).send().await.unwrap().status();
        assert_eq!(post, 401, "POST {p}");
    }
    for p in ["/-/healthy", "/-/ready"] {
        assert_eq!(http.get(format!("{base}{p}")).send().await.unwrap().status(), 200, "{p}");
    }
    let metrics = http.get(format!("{base}/metrics")).bearer_auth(ADMIN).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("modelwatch_auth_refused_total{protocol=\"grpc\",reason=\"unauthenticated\"}"),
        "{metrics}"
    );

    // Reload: a token added to the file works without a restart; one removed stops working.
    let new = "tok-added-later";
    let text = tokens_toml(&[("grafana", QUERY, "query", &[]), ("later", new, "query", &[])]);
    std::fs::write(&tokens, text).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while raw_call(&ch, "/modelwatch.v1.Query/Status", Some(new)).await != Code::Ok {
        assert!(Instant::now() < deadline, "the added token was never accepted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(raw_call(&ch, "/modelwatch.v1.Query/Status", Some(ADMIN)).await, Code::Unauthenticated);
    // A file that does not parse keeps the tokens in force.
    std::fs::write(&tokens, "[[token]]\nname = 3\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(raw_call(&ch, "/modelwatch.v1.Query/Status", Some(new)).await, Code::Ok);

    // grpcurl sends the token with -H, to reflection and to the call alike.
    if let Some(bin) = grpcurl_bin() {
        let run = |args: &[&str]| std::process::Command::new(&bin).args(args).output().unwrap();
        let out = run(&["-plaintext", &d.addr, "list"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"), "{out:?}");
        let auth = format!("authorization: Bearer {new}");
        let out = run(&["-plaintext", "-H", &auth, "-d", "{}", &d.addr, "modelwatch.v1.Query/Status"]);
        assert!(out.status.success(), "{out:?}");
    }
    d.stop_ok();
}

fn grpcurl_bin() -> Option<PathBuf> {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/grpcurl");
    if venv.exists() {
        return Some(venv);
    }
    if tools_for("grpcurl with tokens", &["grpcurl"]) {
        return Some("grpcurl".into());
    }
    None
}

struct Pki {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Pki {
    fn ca(name: &str) -> Pki {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let key = rcgen::KeyPair::generate().unwrap();
        Pki { cert: p.self_signed(&key).unwrap(), key }
    }

    /// A leaf signed by this CA: (certificate PEM, key PEM).
    fn leaf(&self, name: &str, server: bool, expired: bool) -> (String, String) {
        let mut p = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }
}

async fn tls_channel(addr: &str, ca: &str, id: Option<&(String, String)>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((c, k)) = id {
        tls = tls.identity(Identity::from_pem(c, k));
    }
    // Bounded, so that a connection left hanging fails the step (or, in the reload loop, is
    // tried again) instead of holding the test: a CI run on 2026-12-07 stayed 10 minutes in
    // this test with its connections established and the daemon idle.
    let ep = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10));
    ep.connect().await.map_err(|e| format!("{e:?}"))
}

/// Whether a Status call succeeds over this TLS setup (the handshake can fail at connect or at
/// the first call, when the server checks the client certificate).
async fn tls_status(addr: &str, ca: &str, id: Option<&(String, String)>) -> Result<(), String> {
    let ch = tls_channel(addr, ca, id).await?;
    let mut q = QueryClient::new(ch);
    q.status(pb::StatusRequest {}).await.map(|_| ()).map_err(|e| format!("{e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other_ca) = (Pki::ca("modelwatch test CA"), Pki::ca("someone else's CA"));
    let server = ca.leaf("modelwatch", true, false);
    let client = ca.leaf("operator", false, false);
    let stranger = other_ca.leaf("stranger", false, false);
    let expired = ca.leaf("expired", false, true);
    let f = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let (cert, key, client_ca) = (f("server.pem", &server.0), f("server.key", &server.1), f("ca.pem", &ca.pem()));
    let d = Daemon::start(
        &dir.path().join("data"),
        &[
            ("MODELWATCH__SERVER__TLS_CERT_FILE", &cert),
            ("MODELWATCH__SERVER__TLS_KEY_FILE", &key),
            ("MODELWATCH__SERVER__TLS_CLIENT_CA_FILE", &client_ca),
            ("MODELWATCH__SERVER__RELOAD_INTERVAL", "100ms"),
        ],
    );
    // gRPC: a certificate from the CA gets in; none, another CA's, an expired one and plain
    // text do not.
    tls_status(&d.addr, &ca.pem(), Some(&client)).await.expect("client certificate from the CA");
    for (what, id) in [("no certificate", None), ("another CA", Some(&stranger)), ("expired", Some(&expired))] {
        assert!(tls_status(&d.addr, &ca.pem(), id).await.is_err(), "{what} got in");
    }
    let plain = Endpoint::from_shared(d.url())
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(QueryClient::new(ch).status(pb::StatusRequest {}).await.is_err(), "plain text got in");
    }

    // The Rust client library over mutual TLS.
    let mut cfg = modelwatch_client::Config::new(&format!("https://{}", d.addr), "tls-svc");
    cfg.ca_pem = Some(ca.pem());
    cfg.client_identity = Some(client.clone());
    cfg.linger = Duration::from_millis(20);
    let lib = modelwatch_client::Client::start(cfg);
    lib.event(modelwatch_client::pb::InferenceEvent {
        model: "m".into(),
        request_id: "via-tls".into(),
        latency_us: 1000,
        ..Default::default()
    });
    assert!(lib.flush_async(Duration::from_secs(30)).await, "{:?}", lib.stats());
    let mut q = QueryClient::new(tls_channel(&d.addr, &ca.pem(), Some(&client)).await.unwrap());
    let got = q.get_request(pb::GetRequestRequest { request_id: "via-tls".into() }).await.unwrap().into_inner();
    assert_eq!(got.events.len(), 1);

    // HTTP: the same certificates.
    let http_trusting = |ca: &str, id: Option<&(String, String)>| {
        let mut b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
            .https_only(true)
            .timeout(Duration::from_secs(10));
        if let Some((c, k)) = id {
            b = b.identity(reqwest::Identity::from_pem(format!("{c}{k}").as_bytes()).unwrap());
        }
        b.build().unwrap()
    };
    let http = |id| http_trusting(&ca.pem(), id);
    let url = format!("https://{}/api/v1/status/buildinfo", d.http_addr);
    let r = http(Some(&client)).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for id in [None, Some(&stranger), Some(&expired)] {
        assert!(http(id).get(&url).send().await.is_err(), "HTTP let {id:?} in");
    }

    // Reload: a server certificate from a new CA replaces the old one without a restart.
    let new_ca = Pki::ca("the next CA");
    let renewed = new_ca.leaf("modelwatch renewed", true, false);
    assert!(tls_status(&d.addr, &new_ca.pem(), Some(&client)).await.is_err());
    // Key first, then certificate: in between the pair does not match, and the reload that
    // sees that keeps the old pair until the next change.
    std::fs::write(&key, &renewed.1).unwrap();
    std::fs::write(&cert, &renewed.0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = tls_status(&d.addr, &new_ca.pem(), Some(&client)).await {
        assert!(Instant::now() < deadline, "the renewed certificate was never served: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(tls_status(&d.addr, &ca.pem(), Some(&client)).await.is_err(), "the old certificate is still served");
    // The HTTP listener serves the renewed certificate too.
    let metrics = http_trusting(&new_ca.pem(), Some(&client))
        .get(format!("https://{}/metrics", d.http_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("modelwatch_tls_handshake_failures_total"), "{metrics}");
    assert!(metrics.contains("modelwatch_config_reloads_total{what=\"tls\",outcome=\"reloaded\"}"), "{metrics}");
    d.stop_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_socket_knows_its_peer() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    write_tokens(&tokens);
    let sock = dir.path().join("run/ingest.sock");
    let d = Daemon::start(
        &dir.path().join("data"),
        &[
            ("MODELWATCH__SERVER__TOKENS_FILE", tokens.to_str().unwrap()),
            ("MODELWATCH__SERVER__UNIX_SOCKET", sock.to_str().unwrap()),
            ("MODELWATCH__SERVER__UNIX_SOCKET_MODE", "0660"),
        ],
    );
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o660);
    let ch = Endpoint::from_shared(format!("unix:{}", sock.display())).unwrap().connect().await.unwrap();
    let mut ingest = IngestClient::new(ch.clone());
    // No token needed to push here (the socket's mode and group decide who connects), and the
    // kernel vouches for the pid.
    let me = std::process::id();
    let reg = |pid: u32| pb::RegisterRequest { service: "ocr".into(), pid, ..Default::default() };
    let e = ingest.register(reg(me + 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains(&format!("pid: {} is not the local socket peer's pid ({me}", me + 1)),
        "{}",
        e.message()
    );
    let id = ingest.register(reg(me)).await.unwrap().into_inner().client_id;
    assert!(id.ends_with(&format!("/{me}")), "{id}");
    let anonymous = ingest.register(reg(0)).await.unwrap().into_inner().client_id;
    assert!(anonymous.ends_with(&format!("/{me}")), "the pid was filled in from the socket: {anonymous}");
    let p = pb::PushRequest {
        events: Some(pb::EventBatch {
            service: "ocr".into(),
            events: vec![event("", "m", "via-socket")],
            ..Default::default()
        }),
        ..Default::default()
    };
    ingest.push(p).await.unwrap();
    // Queries need a query token, here as over TCP.
    let mut q = QueryClient::new(ch.clone());
    assert_eq!(q.status(pb::StatusRequest {}).await.unwrap_err().code(), Code::PermissionDenied);
    q.status(with_token(tonic::Request::new(pb::StatusRequest {}), Some(QUERY))).await.unwrap();
    let mut tcp = QueryClient::new(Endpoint::from_shared(d.url()).unwrap().connect().await.unwrap());
    let r = tcp
        .get_request(with_token(
            tonic::Request::new(pb::GetRequestRequest { request_id: "via-socket".into() }),
            Some(QUERY),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.events.len(), 1);
    // The CLI speaks to the socket too, with its token from the environment.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelwatch"))
        .args(["query", "--json", "--addr", &format!("unix:{}", sock.display()), "vector(1)"])
        .env("MODELWATCH_TOKEN", QUERY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    d.stop_ok();
    assert!(!sock.exists(), "the socket file is removed at shutdown");
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The margin above `limits.memory_limit` that a flood may reach: what is in flight when the
/// mark is crossed (a decoded batch per stream, the committer's group) and the checkpoint that
/// cuts the heads.
const MEMORY_MARGIN: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_above_the_memory_mark_is_refused_and_nothing_acked_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    // The mark: this build's idle daemon plus 48 MiB.
    let probe = Daemon::start(&dir.path().join("probe"), &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = proc_status_kib(probe.child.id(), "VmRSS:") << 10;
    probe.stop_ok();
    let limit = idle + (48 << 20);
    let d = Daemon::start(
        &dir.path().join("data"),
        &[
            ("MODELWATCH__LIMITS__MEMORY_LIMIT", &limit.to_string()),
            ("MODELWATCH__LIMITS__MEMORY_RETRY_AFTER", "200ms"),
        ],
    );
    let ch = Endpoint::from_shared(d.url()).unwrap().connect().await.unwrap();
    let base = now_ms() - 30 * 60_000;
    const SERIES: usize = 500;
    const PER_SERIES: usize = 100;
    let batch = move |stream: usize, b: usize| {
        let series = (0..SERIES)
            .map(|i| {
                let ts = (0..PER_SERIES).map(|j| base + ((b * PER_SERIES + j) * 10) as i64).collect();
                let s = format!("{}", stream * SERIES + i);
                series("flood", &[("s", &s)], ts, (0..PER_SERIES).map(|j| j as f64).collect())
            })
            .collect();
        pb::MetricBatch { service: "flood".into(), series, ..Default::default() }
    };
    let mut tasks = Vec::new();
    for stream in 0..4 {
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = IngestClient::new(ch).max_decoding_message_size(64 << 20);
            let (mut acked, mut refusals, mut after, mut b) = (0u64, 0u32, 0u32, 0usize);
            let mut delays = Vec::new();
            'open: while b < 300 && (refusals == 0 || after < 5) {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let mut acks =
                    c.stream_metrics(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
                while b < 300 && (refusals == 0 || after < 5) {
                    tx.send(batch(stream, b)).await.unwrap();
                    match acks.message().await {
                        Ok(Some(a)) => {
                            assert_eq!(a.rejected_count, 0, "{a:?}");
                            acked += a.accepted;
                            b += 1;
                            after += u32::from(refusals > 0);
                        }
                        Ok(None) => panic!("the stream ended without an ack"),
                        Err(s) => {
                            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                            let st = <modelwatch::pb::rpc::Status as prost::Message>::decode(s.details()).unwrap();
                            let info =
                                st.details.iter().find(|a| a.type_url.ends_with("google.rpc.RetryInfo")).unwrap();
                            let info =
                                <modelwatch::pb::rpc::RetryInfo as prost::Message>::decode(&info.value[..]).unwrap();
                            let delay = info.retry_delay.unwrap();
                            let delay = Duration::new(delay.seconds as u64, delay.nanos as u32);
                            delays.push(delay);
                            refusals += 1;
                            // The refused batch was not stored; it is sent again after the delay.
                            tokio::time::sleep(delay).await;
                            continue 'open;
                        }
                    }
                }
            }
            (acked, refusals, delays)
        }));
    }
    let (mut acked, mut refusals) = (0u64, 0u32);
    for t in tasks {
        let (a, r, delays) = t.await.unwrap();
        acked += a;
        refusals += r;
        assert!(delays.iter().all(|d| *d == Duration::from_millis(200)), "{delays:?}");
    }
    assert!(refusals > 0, "the flood never crossed the mark ({limit} bytes)");
    let peak = proc_status_kib(d.child.id(), "VmHWM:") << 10;
    println!(
        "memory mark {} MiB, peak RSS {} MiB, {refusals} refusals, {acked} samples acked",
        limit >> 20,
        peak >> 20
    );
    assert!(peak <= limit + MEMORY_MARGIN, "peak RSS {} MiB above the mark {} MiB + margin", peak >> 20, limit >> 20);
    // Every acked sample is stored, once.
    let mut q = QueryClient::new(ch.clone());
    let r = q
        .eval(pb::EvalRequest { query: "sum(count_over_time(flood[1h]))".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let stored = r.series[0].points[0].value as u64;
    assert_eq!(stored, acked);
    let metrics = reqwest::get(format!("http://{}/metrics", d.http_addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("modelwatch_memory_refused_total "), "{metrics}");
    assert!(!metrics.contains("modelwatch_memory_refused_total 0\n"), "{metrics}");
    d.stop_ok();
}

fn retry_delay(s: &tonic::Status) -> Option<Duration> {
    let st = <modelwatch::pb::rpc::Status as prost::Message>::decode(s.details()).ok()?;
    let info = st.details.iter().find(|a| a.type_url.ends_with("google.rpc.RetryInfo"))?;
    let d = <modelwatch::pb::rpc::RetryInfo as prost::Message>::decode(&info.value[..]).ok()?.retry_delay?;
    Some(Duration::new(d.seconds as u64, d.nanos as u32))
}

fn events_batch(client: &str, seq: u64, id: &str) -> pb::EventBatch {
    pb::EventBatch {
        client_id: client.into(),
        seq,
        service: "ocr".into(),
        events: vec![event("", "m", id)],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_client_limits_on_streams_and_batch_rate() {
    let dir = tempfile::tempdir().unwrap();
    // Streams: two per client.
    let d = Daemon::start(
        &dir.path().join("streams"),
        &[("MODELWATCH__LIMITS__MAX_STREAMS_PER_CLIENT", "2"), ("MODELWATCH__LIMITS__MAX_BATCH_RATE_PER_CLIENT", "0")],
    );
    let ch = Endpoint::from_shared(d.url()).unwrap().connect().await.unwrap();
    let open = |client: &'static str, seq: u64| {
        let ch = ch.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(events_batch(client, seq, &format!("{client}-{seq}"))).await.unwrap();
            let mut acks = IngestClient::new(ch)
                .stream_events(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            (tx, acks.message().await)
        }
    };
    let (first, a) = open("c1", 1).await;
    a.unwrap().unwrap();
    let (_second, a) = open("c1", 2).await;
    a.unwrap().unwrap();
    let (_third, a) = open("c1", 3).await;
    let e = a.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("limits.max_streams_per_client: client \"c1\" has 2 streams open"), "{}", e.message());
    let (_other, a) = open("c2", 1).await;
    a.unwrap().unwrap();
    // A stream that ends frees its place.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seq = 4;
    loop {
        let (_s, a) = open("c1", seq).await;
        if a.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the ended stream's place was never freed");
        seq += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.stop_ok();

    // Batch rate: one batch per 100 s per client (the bucket holds one).
    let d = Daemon::start(&dir.path().join("rate"), &[("MODELWATCH__LIMITS__MAX_BATCH_RATE_PER_CLIENT", "0.01")]);
    let ch = Endpoint::from_shared(d.url()).unwrap().connect().await.unwrap();
    let mut ingest = IngestClient::new(ch.clone());
    let push = |client: &str, seq: u64, id: &str| pb::PushRequest {
        events: Some(events_batch(client, seq, id)),
        ..Default::default()
    };
    ingest.push(push("r1", 1, "r1-first")).await.unwrap();
    let e = ingest.push(push("r1", 2, "r1-second")).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().starts_with("limits.max_batch_rate_per_client: client \"r1\""), "{}", e.message());
    let delay = retry_delay(&e).expect("a RetryInfo detail");
    assert!(delay > Duration::from_secs(90) && delay <= Duration::from_secs(100), "{delay:?}");
    ingest.push(push("r2", 1, "r2-first")).await.unwrap();
    let mut q = QueryClient::new(ch);
    for (id, n) in [("r1-first", 1), ("r1-second", 0), ("r2-first", 1)] {
        let r = q.get_request(pb::GetRequestRequest { request_id: id.into() }).await.unwrap().into_inner();
        assert_eq!(r.events.len(), n, "{id}");
    }
    let metrics = reqwest::get(format!("http://{}/metrics", d.http_addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("modelwatch_ingest_refused_batches_total{reason=\"client_rate\"} 1"), "{metrics}");
    d.stop_ok();
}

/// Streams that sent one large message each and stay open hold nothing of it: the daemon reads
/// each message into a buffer of its own and frees it once decoded (tonic's own reader kept a
/// buffer a stream, grown past the largest message, for the stream's life: about 5 MB each
/// here, 98 MB for the twenty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_streams_keep_no_message_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), &[]);
    let rss = || proc_status_kib(d.child.id(), "VmRSS:") << 10;
    let before = rss();
    let now = now_ms();
    const STREAMS: usize = 20;
    let mut open = Vec::new();
    let mut message = 0;
    for s in 0..STREAMS {
        let mut c = d.ingest().await.max_encoding_message_size(64 << 20);
        let batch = pb::LogBatch {
            service: format!("idle{s}"),
            records: (0..30_000)
                .map(|k| pb::LogRecord {
                    timestamp_ms: now - 1000,
                    message: format!("record {k} of stream {s} {}", "z".repeat(100)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        message = prost::Message::encoded_len(&batch) as u64;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(batch).await.unwrap();
        let mut acks = c.stream_logs(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
        assert_eq!(acks.message().await.unwrap().expect("ack").accepted, 30_000);
        open.push((c, tx, acks));
    }
    assert!(message > 4_000_000, "{message}");
    let grown = rss().saturating_sub(before);
    println!("{STREAMS} idle streams after one {message}-byte message each: RSS +{} MiB", grown >> 20);
    // What the stored records take stays; half a message a stream would be 41 MB.
    assert!(grown < STREAMS as u64 * message / 2, "RSS grew by {grown} bytes");
    drop(open);
    d.stop_ok();
}
