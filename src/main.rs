//! The `modelwatch` binary: flags, logging set-up, config, then `app::run`.
use anyhow::Context;
use clap::{Parser, Subcommand};
use modelwatch::config::Config;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "modelwatch", version, about = "Telemetry daemon for hosts that serve ML models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: gRPC ingest and query on one listener, data in a local folder.
    Serve {
        /// TOML config file (optional; every key has a default, see deploy/modelwatch.toml).
        /// Environment variables MODELWATCH__SECTION__KEY override it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Data folder (overrides storage.data_dir; default ./modelwatch-data).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// gRPC listen address (overrides server.listen; default 127.0.0.1:7070). Port 0 picks
        /// a free port; the bound address is printed as `listening on ADDR`.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// HTTP listen address of the Prometheus query API (overrides server.http_listen;
        /// default 127.0.0.1:7071), printed as `http listening on ADDR`.
        #[arg(long, value_name = "ADDR")]
        http_listen: Option<SocketAddr>,
        /// Allow a non-loopback --listen or --http-listen although the daemon has no TLS or
        /// authentication yet (server.insecure): anyone who reaches it can push and read.
        #[arg(long)]
        insecure: bool,
    },
    /// Evaluate a PromQL expression on a running daemon: at one time (now, or --at), or over
    /// --start/--end at --step. Prints a table, or the Prometheus API's JSON with --json.
    Query {
        /// The PromQL expression, e.g. 'sum by (model) (rate(model_requests_total[5m]))'.
        expr: String,
        /// Evaluation time: RFC 3339 or Unix seconds (default now).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// Range start: RFC 3339 or Unix seconds (default an hour before --end).
        #[arg(long, value_name = "TIME")]
        start: Option<String>,
        /// Range end (default now).
        #[arg(long, value_name = "TIME")]
        end: Option<String>,
        /// Range step, e.g. 15s or 1m (default the range / 120).
        #[arg(long, value_name = "DURATION")]
        step: Option<String>,
        /// Print JSON (the `data` object of Prometheus' API) instead of a table.
        #[arg(long)]
        json: bool,
        /// The daemon's gRPC address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
        addr: String,
    },
    /// Check rule files or run rule unit tests, as `promtool check rules` / `promtool test
    /// rules` do (same file formats, same exit codes), on the daemon's own engine.
    Rules {
        #[command(subcommand)]
        what: RulesCommand,
    },
    /// A running daemon's rules and alerts as tables: `rules` (health, last evaluation),
    /// `active` (pending, firing, resolved; silenced or inhibited), `history` (when each was
    /// pending and firing), `groups` (notification groups).
    Alerts {
        #[command(subcommand)]
        what: AlertsCommand,
        /// The daemon's gRPC address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070", global = true)]
        addr: String,
    },
    /// Silences on a running daemon: `add` (matchers, for a duration or until a time),
    /// `list`, `expire`. A silenced alert stays visible as firing but is not sent.
    Silence {
        #[command(subcommand)]
        what: SilenceCommand,
        /// The daemon's gRPC address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070", global = true)]
        addr: String,
    },
    /// Reports from a running daemon: `service`, `errors`, `gpu`, `capacity`, `compare`. Text
    /// with units and sparklines, `--json` (as grpcurl prints it) or `--html FILE` (a page with
    /// charts, nothing fetched).
    Report {
        #[command(subcommand)]
        what: ReportCommand,
        /// How far back (default 24h); or --start/--end.
        #[arg(long, value_name = "DURATION", global = true)]
        since: Option<String>,
        /// Range start: RFC 3339 or Unix seconds.
        #[arg(long, value_name = "TIME", global = true)]
        start: Option<String>,
        /// Range end (default now).
        #[arg(long, value_name = "TIME", global = true)]
        end: Option<String>,
        /// Print the answer as JSON.
        #[arg(long, global = true)]
        json: bool,
        /// Write a self-contained HTML page instead.
        #[arg(long, value_name = "FILE", global = true)]
        html: Option<PathBuf>,
        /// The daemon's gRPC address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070", global = true)]
        addr: String,
    },
    /// A live view of a running daemon: per service throughput, error rate and p95; per GPU
    /// utilization, memory, temperature, power and its processes; firing alerts. `q` quits.
    Top {
        /// Seconds between refreshes.
        #[arg(long, value_name = "DURATION", default_value = "1s")]
        interval: String,
        /// Print one frame and exit (no terminal control).
        #[arg(long)]
        once: bool,
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
        addr: String,
    },
    /// Log records from a running daemon, oldest first: by request id, or by service, level and
    /// text; --follow keeps printing new ones.
    Logs {
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
        #[arg(long)]
        service: Option<String>,
        /// The lowest level shown: trace, debug, info, warn, error, fatal.
        #[arg(long)]
        level: Option<String>,
        /// Only messages containing this text.
        #[arg(long)]
        contains: Option<String>,
        /// How far back (default 1h).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// The most records printed before following (default 1000; newest kept).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[arg(long, short = 'f')]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
        addr: String,
    },
    /// End-to-end load: N simulated services push metrics, events and logs over real gRPC
    /// streams to a running daemon; reports acked items/s, ack latency p50/p99/p99.9, and the
    /// daemon's CPU, peak RSS and bytes on disk per item (from its /metrics).
    Loadgen {
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
        addr: String,
        /// The daemon's HTTP listener (for /metrics).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7071")]
        http: String,
        /// Simulated services, each with one stream per kind.
        #[arg(long, default_value_t = 4)]
        services: usize,
        /// metrics, events, logs or all (comma-separated).
        #[arg(long, default_value = "all")]
        kind: String,
        /// Items per service and kind (with --duration: the most).
        #[arg(long)]
        count: Option<u64>,
        /// How long to send (`30s`, `5m`).
        #[arg(long)]
        duration: Option<String>,
        /// Items per batch.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Series per service (metrics; a batch holds batch/series samples of each).
        #[arg(long, default_value_t = 100)]
        series: usize,
        /// Batches in flight per stream.
        #[arg(long, default_value_t = 8)]
        window: usize,
        /// Items per second over all streams, sent open-loop (default: as fast as acked).
        #[arg(long)]
        rate: Option<f64>,
        /// Metrics stamped with the clock, no batch marked backfill (for runs under retention).
        #[arg(long)]
        live: bool,
        /// Print the rate, RSS and data folder this often (`30s`), and how the folder moved.
        #[arg(long, value_name = "D")]
        report_every: Option<String>,
        /// A random 128-bit request id (32 hex digits) on every event.
        #[arg(long)]
        request_ids: bool,
        /// After the load, N GetRequest look-ups: half of ids sent, half of ids never sent.
        #[arg(long, value_name = "N", default_value_t = 0)]
        lookups: usize,
    },
    /// A consistent copy of a running daemon's data folder (checkpoint, then copy; ingest waits
    /// meanwhile). Written on the daemon's host: --path, or <data_dir>/snapshots/<UTC time>.
    /// Needs an admin token when the daemon has tokens (MODELWATCH_TOKEN).
    Snapshot {
        /// A folder that does not exist yet, on the daemon's host.
        #[arg(long, value_name = "DIR")]
        path: Option<String>,
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
        addr: String,
    },
    /// Make a bearer token: prints the token (give it to the client; it is shown once) and the
    /// `[[token]]` entry to append to server.tokens_file, which keeps only its SHA-256. Clients
    /// send it as `authorization: Bearer <token>`; this CLI reads it from MODELWATCH_TOKEN.
    Token {
        #[command(subcommand)]
        what: TokenCommand,
    },
    /// Repair a data folder whose write-ahead log is damaged: replays every record that can be
    /// read, reports each damaged stretch (file, offset, bytes, why), and leaves the folder
    /// clean (everything checkpointed, the log emptied) so that `serve` starts. Run it with the
    /// daemon stopped; keep a copy of the folder first if the lost records matter.
    Recover {
        /// TOML config file, as for `serve`.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Data folder (overrides storage.data_dir).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// A new random token.
    New {
        /// A name for the client, shown in refusals and logs (e.g. ocr-ingest, grafana).
        #[arg(long)]
        name: String,
        /// ingest (push data), query (read), or admin (query, plus rule reload and silences).
        #[arg(long)]
        role: String,
        /// For an ingest token: a service it may push as (repeat for more; none: any).
        #[arg(long = "service", value_name = "SERVICE")]
        services: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// One service, model or version: requests, success, throughput, latency (overall and per
    /// stage), slow requests, a label's distribution, top errors, busiest hours, tokens.
    Service {
        #[arg(long, default_value = "")]
        service: String,
        #[arg(long, default_value = "")]
        model: String,
        #[arg(long, default_value = "")]
        version: String,
        /// An event label whose distribution to show, e.g. card_type.
        #[arg(long, default_value = "")]
        label: String,
        /// Requests slower than this count as slow (default 1s).
        #[arg(long, default_value = "")]
        slow: String,
        /// The interval of the per-interval figures (default the range / 60).
        #[arg(long, default_value = "")]
        step: String,
    },
    /// Failed requests and error logs by service and type, with examples and request ids.
    Errors {
        #[arg(long, default_value = "")]
        service: String,
        #[arg(long, default_value = "")]
        model: String,
    },
    /// Per GPU: utilization, memory, temperature, power, faults, and the services on it.
    Gpu {
        #[arg(long, default_value = "")]
        gpu: String,
    },
    /// Per service: scale up, scale down or hold, with the numbers and the cost.
    Capacity {
        #[arg(long, default_value = "")]
        service: String,
        /// The p95 objective (default report.slo_p95).
        #[arg(long, default_value = "")]
        slo: String,
    },
    /// A report over two ranges with the change of each figure: `compare service --a 48h..24h
    /// --b 24h..now --service ocr`.
    Compare {
        /// service, errors, gpu or capacity.
        report: String,
        /// The first range: FROM..TO, each now, a duration ago (24h) or a time.
        #[arg(long)]
        a: String,
        /// The second range.
        #[arg(long)]
        b: String,
        #[arg(long, default_value = "")]
        service: String,
        #[arg(long, default_value = "")]
        model: String,
        #[arg(long, default_value = "")]
        label: String,
        #[arg(long, default_value = "")]
        gpu: String,
        #[arg(long, default_value = "")]
        slo: String,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Check Prometheus rule files: syntax, expressions, templates, names.
    Check {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Run rule unit tests written in promtool's format (`rule_files`, `tests` with
    /// `input_series`, `alert_rule_test`, `promql_expr_test`).
    Test {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// Every rule: group, type, health, last evaluation and its duration, pending/firing.
    Rules,
    /// Pending, firing and recently resolved alerts.
    Active {
        /// Only alerts matching these (`severity="page"`, `model=~"llm-.*"`).
        matchers: Vec<String>,
    },
    /// When alerts were pending and firing, from the stored ALERTS series.
    History {
        /// Only alerts matching these.
        matchers: Vec<String>,
        /// How far back (default 24h); or --start/--end.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        #[arg(long, value_name = "TIME")]
        start: Option<String>,
        #[arg(long, value_name = "TIME")]
        end: Option<String>,
    },
    /// Notification groups: receiver, group key, alerts, next flush.
    Groups,
}

#[derive(Subcommand)]
enum SilenceCommand {
    /// Silence the alerts matching every matcher, e.g. `alertname="GpuHot" gpu="0"`.
    Add {
        #[arg(required = true, value_name = "MATCHER")]
        matchers: Vec<String>,
        /// How long from the start (default 1h).
        #[arg(long, value_name = "DURATION")]
        duration: Option<String>,
        /// Start (RFC 3339 or Unix seconds; default now).
        #[arg(long, value_name = "TIME")]
        start: Option<String>,
        /// End (RFC 3339 or Unix seconds), instead of --duration.
        #[arg(long, value_name = "TIME")]
        end: Option<String>,
        /// Who silences (default $USER).
        #[arg(long)]
        author: Option<String>,
        /// Why.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Pending and active silences (--expired: also those ended in the last five days).
    List {
        #[arg(long)]
        expired: bool,
    },
    /// End silences now.
    Expire {
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
    },
}

/// Runs one client command on a small runtime; prints its table or its error (exit 1).
fn client_command(name: &str, f: impl std::future::Future<Output = Result<String, String>>) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    match rt.block_on(f) {
        Ok(out) => {
            print!("{out}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("modelwatch {name}: {e}");
            std::process::exit(1)
        }
    }
}

fn init_tracing(cfg: &Config) {
    let filter = std::env::var("MODELWATCH_LOG").unwrap_or_else(|_| cfg.log.level.clone());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr: stdout carries the `listening on` line that scripts read.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if cfg.log.format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (config, data_dir, listen, http_listen, insecure) = match cli.command {
        Command::Serve { config, data_dir, listen, http_listen, insecure } => {
            modelwatch::telemetry::tune_heap();
            (config, data_dir, listen, http_listen, insecure)
        }
        Command::Query { expr, at, start, end, step, json, addr } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let args = modelwatch::cli::query::Args { addr, query: expr, at, start, end, step, json };
            match rt.block_on(modelwatch::cli::query::run(args)) {
                Ok(out) => {
                    print!("{out}");
                    return Ok(());
                }
                Err(e) => {
                    eprintln!("modelwatch query: {e}");
                    std::process::exit(1);
                }
            }
        }
        Command::Loadgen {
            addr,
            http,
            services,
            kind,
            count,
            duration,
            batch,
            series,
            window,
            rate,
            live,
            report_every,
            request_ids,
            lookups,
        } => {
            let kinds = modelwatch::cli::loadgen::kinds(&kind).map_err(anyhow::Error::msg)?;
            let duration = match duration {
                Some(d) => Some(humantime::parse_duration(&d).map_err(|e| anyhow::anyhow!("--duration {d:?}: {e}"))?),
                None => None,
            };
            if batch == 0 || services == 0 || series == 0 {
                anyhow::bail!("--batch, --services and --series must be above 0");
            }
            if rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                anyhow::bail!("--rate must be a number of items per second above 0");
            }
            let report_every = match report_every {
                Some(d) => match humantime::parse_duration(&d) {
                    Ok(d) if !d.is_zero() => Some(d),
                    Ok(_) => anyhow::bail!("--report-every must be above 0"),
                    Err(e) => anyhow::bail!("--report-every {d:?}: {e}"),
                },
                None => None,
            };
            if lookups > 0 && !(request_ids && kinds.contains(&modelwatch::cli::loadgen::Kind::Events)) {
                anyhow::bail!("--lookups needs --request-ids and events among --kind");
            }
            let args = modelwatch::cli::loadgen::Args {
                addr,
                http,
                services,
                kinds,
                count,
                duration,
                batch,
                series,
                window,
                rate,
                live,
                report_every,
                request_ids,
                lookups,
            };
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            match rt.block_on(modelwatch::cli::loadgen::run(args)) {
                Ok(out) => {
                    print!("{out}");
                    std::process::exit(0)
                }
                Err(e) => {
                    eprintln!("modelwatch loadgen: {e}");
                    std::process::exit(1)
                }
            }
        }
        Command::Snapshot { path, addr } => client_command("snapshot", async move {
            let conn = modelwatch::cli::conn::connect(&addr).await?;
            let r = modelwatch::pb::admin_client::AdminClient::new(conn)
                .snapshot(modelwatch::pb::SnapshotRequest { path: path.unwrap_or_default() })
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                .into_inner();
            Ok(format!("{}\n{} files, {} bytes, {:.2} s\n", r.path, r.files, r.bytes, r.seconds))
        }),
        Command::Token { what: TokenCommand::New { name, role, services } } => {
            use modelwatch::server::auth::{hex, new_token, token_hash, Role};
            let r = Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("--role: {role:?} is not one of ingest, query, admin"))?;
            if !services.is_empty() && r != Role::Ingest {
                anyhow::bail!("--service: only an ingest token is limited to services");
            }
            let token = new_token().map_err(anyhow::Error::msg)?;
            println!("# token (give it to the client; it is not stored anywhere):\n# {token}");
            println!("# append to server.tokens_file:");
            println!("[[token]]\nname = {name:?}\nsha256 = \"{}\"\nrole = \"{role}\"", hex(&token_hash(&token)));
            if !services.is_empty() {
                println!("services = {services:?}");
            }
            return Ok(());
        }
        Command::Rules { what } => {
            let (out, ok) = match what {
                RulesCommand::Check { files } => modelwatch::cli::rules::check(&files),
                RulesCommand::Test { files } => modelwatch::cli::rules::test(&files),
            };
            print!("{out}");
            std::process::exit(if ok { 0 } else { 1 });
        }
        Command::Alerts { what, addr } => {
            use modelwatch::cli::alerts;
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            match what {
                AlertsCommand::Rules => client_command("alerts rules", alerts::rules(&addr)),
                AlertsCommand::Active { matchers } => {
                    client_command("alerts active", alerts::active(&addr, matchers, now))
                }
                AlertsCommand::History { matchers, since, start, end } => {
                    let last = match (&since, &start) {
                        (None, None) => "24h".to_string(),
                        (s, _) => s.clone().unwrap_or_default(),
                    };
                    let range = modelwatch::pb::TimeRange {
                        start: start.unwrap_or_default(),
                        end: end.unwrap_or_default(),
                        last,
                    };
                    client_command("alerts history", alerts::history(&addr, range, matchers))
                }
                AlertsCommand::Groups => client_command("alerts groups", alerts::groups(&addr)),
            }
        }
        Command::Silence { what, addr } => {
            use modelwatch::cli::alerts;
            match what {
                SilenceCommand::Add { matchers, duration, start, end, author, comment } => {
                    let author = author.or_else(|| std::env::var("USER").ok()).unwrap_or_default();
                    let a = alerts::SilenceArgs { matchers, duration, start, end, author, comment };
                    client_command("silence add", alerts::silence_add(&addr, a))
                }
                SilenceCommand::List { expired } => {
                    client_command("silence list", alerts::silence_list(&addr, expired))
                }
                SilenceCommand::Expire { ids } => client_command("silence expire", alerts::silence_expire(&addr, ids)),
            }
        }
        Command::Report { what, since, start, end, json, html, addr } => {
            use modelwatch::cli::report::{self, Format};
            let format = match (html, json) {
                (Some(p), _) => Format::Html(p),
                (None, true) => Format::Json,
                (None, false) => Format::Text,
            };
            let range = Some(report::range(since, start, end, "24h"));
            match what {
                ReportCommand::Service { service, model, version, label, slow, step } => {
                    let req = modelwatch::pb::ServiceReportRequest {
                        service,
                        model,
                        version,
                        range,
                        slow_threshold: slow,
                        label,
                        step,
                        top_errors: 0,
                    };
                    client_command("report service", report::service(&addr, req, format))
                }
                ReportCommand::Errors { service, model } => {
                    let req = modelwatch::pb::ErrorReportRequest { range, service, model, examples: 0 };
                    client_command("report errors", report::errors(&addr, req, format))
                }
                ReportCommand::Gpu { gpu } => {
                    let req = modelwatch::pb::GpuReportRequest { range, gpu };
                    client_command("report gpu", report::gpu(&addr, req, format))
                }
                ReportCommand::Capacity { service, slo } => {
                    let req = modelwatch::pb::CapacityReportRequest { range, service, slo_p95: slo, days: 0 };
                    client_command("report capacity", report::capacity(&addr, req, format))
                }
                ReportCommand::Compare { report: which, a, b, service, model, label, gpu, slo } => {
                    let args = report::CompareArgs {
                        report: which,
                        a,
                        b,
                        service: modelwatch::pb::ServiceReportRequest { service, model, label, ..Default::default() },
                        gpu,
                        slo,
                    };
                    client_command("report compare", report::compare(&addr, args, format))
                }
            }
        }
        Command::Top { interval, once, addr } => {
            let interval = modelwatch::query::plan::parse_duration("--interval", &interval)
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .max(std::time::Duration::from_millis(100));
            client_command("top", modelwatch::cli::top::run(modelwatch::cli::top::Args { addr, interval, once }))
        }
        Command::Logs { request_id, service, level, contains, since, limit, follow, json, addr } => {
            use modelwatch::cli::report;
            let a = report::LogArgs {
                request_id: request_id.unwrap_or_default(),
                service: service.unwrap_or_default(),
                level: level.unwrap_or_default(),
                contains: contains.unwrap_or_default(),
                range: report::range(since, None, None, "1h"),
                limit,
                follow,
                json,
            };
            client_command("logs", report::logs(&addr, a))
        }
        Command::Recover { config, data_dir } => {
            let mut cfg = Config::load(config.as_deref())?;
            if let Some(d) = data_dir {
                cfg.storage.data_dir = d;
            }
            init_tracing(&cfg);
            let rep = modelwatch::app::recover(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
            let dir = cfg.storage.data_dir.display();
            println!("{dir}: {} write-ahead-log records replayed", rep.salvage.records);
            if rep.salvage.skipped.is_empty() {
                println!("nothing was damaged; the folder is clean");
            }
            for (path, offset, why, bytes) in &rep.salvage.skipped {
                println!("lost: {} bytes at {}:{offset}: {why}", bytes, path.display());
            }
            return Ok(());
        }
    };
    let mut cfg = Config::load(config.as_deref())?;
    if let Some(d) = data_dir {
        cfg.storage.data_dir = d;
    }
    if let Some(l) = listen {
        cfg.server.listen = l;
    }
    if let Some(l) = http_listen {
        cfg.server.http_listen = l;
    }
    cfg.server.insecure |= insecure;
    cfg.server.check_exposure()?;
    init_tracing(&cfg);
    let nice = cfg.server.worker_nice;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || modelwatch::server::set_thread_nice(nice))
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let token = CancellationToken::new();
        modelwatch::shutdown::on_signals(token.clone());
        modelwatch::app::run(cfg, token, |b| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on {}", b.grpc);
            let _ = writeln!(out, "http listening on {}", b.http);
            let _ = out.flush();
            modelwatch::systemd::notify(&format!("READY=1\nSTATUS=listening on {} (gRPC), {} (HTTP)", b.grpc, b.http));
        })
        .await
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
