//! The `Alerts` service: thin adapters over [`crate::alert::manager::Manager`].
use super::Ctx;
use crate::alert::eval::State;
use crate::alert::rules::Kind;
use crate::notify::route::Matcher;
use crate::notify::silence::Silence;
use crate::pb::{self, alerts_server::Alerts};
use crate::query::timestamp;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AlertsApi(pub Arc<Ctx>);

fn dur(ms: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 })
}

fn ms_of(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

fn silence_info(s: Silence, now: i64) -> pb::SilenceInfo {
    pb::SilenceInfo {
        state: s.state(now).into(),
        id: s.id,
        matchers: s.matchers,
        starts_at: timestamp(s.starts_at),
        ends_at: timestamp(s.ends_at),
        created_by: s.created_by,
        comment: s.comment,
        updated_at: timestamp(s.updated_at),
    }
}

fn matchers(list: &[String]) -> Result<Vec<Matcher>, Status> {
    list.iter()
        .enumerate()
        .map(|(i, m)| Matcher::parse(m).map_err(|e| Status::invalid_argument(format!("matchers[{i}]: {e}"))))
        .collect()
}

fn map(pairs: &[(String, String)]) -> HashMap<String, String> {
    pairs.iter().cloned().collect()
}

#[tonic::async_trait]
impl Alerts for AlertsApi {
    async fn list_rules(&self, _: Request<pb::ListRulesRequest>) -> Result<Response<pb::ListRulesResponse>, Status> {
        let mgr = &self.0.alerts;
        let rules = mgr.with_groups(|groups| {
            let mut out = Vec::new();
            for l in groups {
                for (r, st) in l.group.rules.iter().zip(&l.state.rules) {
                    let (for_ms, keep_ms, ann) = match &r.kind {
                        Kind::Alert { for_ms, keep_firing_for_ms, annotations } => (
                            *for_ms,
                            *keep_firing_for_ms,
                            annotations.iter().map(|(k, t)| (k.clone(), t.text.clone())).collect(),
                        ),
                        Kind::Record => (0, 0, HashMap::new()),
                    };
                    let count = |s: State| st.active.values().filter(|a| a.state == s).count() as u32;
                    out.push(pb::RuleInfo {
                        group: l.group.name.clone(),
                        file: l.group.file.clone(),
                        name: r.name.clone(),
                        r#type: if r.is_alert() { "alerting" } else { "recording" }.into(),
                        expr: r.expr_text.clone(),
                        health: st.health().into(),
                        last_error: st.last_error.clone().unwrap_or_default(),
                        last_evaluation: if st.evaluated { timestamp(st.last_eval_ms) } else { None },
                        evaluation_duration: Some(prost_types::Duration {
                            seconds: st.last_duration_s as i64,
                            nanos: (st.last_duration_s.fract() * 1e9) as i32,
                        }),
                        r#for: dur(for_ms),
                        keep_firing_for: dur(keep_ms),
                        labels: r.labels.iter().map(|(k, t)| (k.clone(), t.text.clone())).collect(),
                        annotations: ann,
                        pending: count(State::Pending),
                        firing: count(State::Firing),
                        interval: dur(l.interval_ms),
                    });
                }
            }
            out
        });
        let rs = mgr.reload_status();
        Ok(Response::new(pb::ListRulesResponse {
            rules,
            last_reload_ok: rs.ok,
            last_reload_errors: rs.errors,
            last_reload: timestamp(rs.at_ms),
            rule_files: rs.files,
        }))
    }

    async fn active_alerts(
        &self,
        req: Request<pb::ActiveAlertsRequest>,
    ) -> Result<Response<pb::ActiveAlertsResponse>, Status> {
        let mut ms = Vec::new();
        for (i, m) in req.into_inner().matchers.iter().enumerate() {
            ms.push(Matcher::parse(m).map_err(|e| Status::invalid_argument(format!("matchers[{i}]: {e}")))?);
        }
        let now = self.0.clock.now_ms();
        let alerts = self
            .0
            .alerts
            .alerts()
            .into_iter()
            .filter(|r| ms.iter().all(|m| m.matches(&r.alert.labels)))
            .map(|r| {
                let a = r.alert;
                let (silenced_by, inhibited) = self.0.notifier.muted(&a, now);
                pb::AlertInfo {
                    labels: map(&a.labels),
                    annotations: map(&a.annotations),
                    state: a.state.as_str().into(),
                    active_at: timestamp(a.active_at),
                    fired_at: a.fired_at.and_then(timestamp),
                    resolved_at: a.resolved_at.and_then(timestamp),
                    value: a.value,
                    group: r.group,
                    rule: r.rule,
                    silenced_by,
                    inhibited,
                }
            })
            .collect();
        Ok(Response::new(pb::ActiveAlertsResponse { alerts }))
    }

    async fn reload_rules(
        &self,
        _: Request<pb::ReloadRulesRequest>,
    ) -> Result<Response<pb::ReloadRulesResponse>, Status> {
        let (m, now) = (self.0.alerts.clone(), self.0.clock.now_ms());
        let r = tokio::task::spawn_blocking(move || m.reload(now))
            .await
            .map_err(|e| Status::internal(format!("reload task: {e}")))?;
        Ok(Response::new(match r {
            Ok(n) => pb::ReloadRulesResponse { ok: true, rules: n as u32, errors: Vec::new() },
            Err(errors) => pb::ReloadRulesResponse { ok: false, rules: 0, errors },
        }))
    }

    async fn alert_history(
        &self,
        req: Request<pb::AlertHistoryRequest>,
    ) -> Result<Response<pb::AlertHistoryResponse>, Status> {
        let req = req.into_inner();
        let ms = matchers(&req.matchers)?;
        let now = self.0.clock.now_ms();
        let range = match &req.range {
            Some(r) => Some(r.clone()),
            None => Some(pb::TimeRange { last: "24h".into(), ..Default::default() }),
        };
        let (start, end) = crate::query::parse_range(range.as_ref(), now).map_err(Status::from)?;
        let limit = if req.limit == 0 { 1000 } else { req.limit as usize };
        // A run of samples is one period while they come at least every two evaluation
        // intervals (at most a group's own interval of 5 minutes); a longer gap is a daemon
        // that was down.
        let gap = (2 * self.0.alerts.max_interval_ms()).max(self.0.query.lookback_delta.as_millis() as i64);
        super::promql_blocking(&self.0, move |store, budget| {
            let src = crate::promql::StoreSource { store };
            let name = promql_parser::label::Matcher::new(promql_parser::label::MatchOp::Equal, "__name__", "ALERTS");
            let series = crate::promql::Source::select(&src, &[name], start, end, budget)?;
            let mut all = crate::alert::history::periods(&series, end, gap);
            all.retain(|p| ms.iter().all(|m| m.matches(&p.labels)));
            let truncated = all.len() > limit;
            all.truncate(limit);
            let periods = all
                .into_iter()
                .map(|p| pb::AlertPeriod {
                    labels: map(&p.labels),
                    state: p.state,
                    start: timestamp(p.start),
                    end: p.end.and_then(timestamp),
                })
                .collect();
            Ok(pb::AlertHistoryResponse { periods, truncated })
        })
        .await
    }

    async fn create_silence(
        &self,
        req: Request<pb::CreateSilenceRequest>,
    ) -> Result<Response<pb::SilenceInfo>, Status> {
        let r = req.into_inner();
        let now = self.0.clock.now_ms();
        let starts = r.starts_at.as_ref().map_or(0, ms_of);
        let ends = match (&r.ends_at, &r.duration) {
            (Some(_), Some(_)) => return Err(Status::invalid_argument("ends_at and duration: give one")),
            (Some(e), None) => ms_of(e),
            (None, Some(d)) if d.seconds > 0 || d.nanos > 0 => {
                starts.max(now).saturating_add(d.seconds.saturating_mul(1000) + i64::from(d.nanos) / 1_000_000)
            }
            (None, Some(d)) => {
                return Err(Status::invalid_argument(format!("duration: {}s is not positive", d.seconds)))
            }
            (None, None) => return Err(Status::invalid_argument("ends_at or duration: one is needed")),
        };
        matchers(&r.matchers)?;
        let s = self.0.notifier.silences.clone();
        let out =
            tokio::task::spawn_blocking(move || s.add(r.matchers, starts, ends, r.created_by, r.comment, now))
                .await
                .map_err(|e| Status::internal(format!("silence task: {e}")))?
                .map_err(|e| {
                    if e.contains("limit") {
                        Status::resource_exhausted(e)
                    } else {
                        Status::invalid_argument(e)
                    }
                })?;
        tracing::info!(id = %out.id, matchers = ?out.matchers, by = %out.created_by, "silence created");
        Ok(Response::new(silence_info(out, now)))
    }

    async fn list_silences(
        &self,
        req: Request<pb::ListSilencesRequest>,
    ) -> Result<Response<pb::ListSilencesResponse>, Status> {
        let all = req.into_inner().include_expired;
        let now = self.0.clock.now_ms();
        let silences = self
            .0
            .notifier
            .silences
            .list()
            .into_iter()
            .filter(|s| all || s.state(now) != "expired")
            .map(|s| silence_info(s, now))
            .collect();
        Ok(Response::new(pb::ListSilencesResponse { silences }))
    }

    async fn expire_silence(
        &self,
        req: Request<pb::ExpireSilenceRequest>,
    ) -> Result<Response<pb::SilenceInfo>, Status> {
        let id = req.into_inner().id;
        let now = self.0.clock.now_ms();
        let s = self.0.notifier.silences.clone();
        let out = tokio::task::spawn_blocking(move || s.expire(&id, now))
            .await
            .map_err(|e| Status::internal(format!("silence task: {e}")))?
            .map_err(
                |e| if e.contains("no silence") { Status::not_found(e) } else { Status::failed_precondition(e) },
            )?;
        tracing::info!(id = %out.id, "silence expired");
        Ok(Response::new(silence_info(out, now)))
    }

    async fn list_notification_groups(
        &self,
        _: Request<pb::ListNotificationGroupsRequest>,
    ) -> Result<Response<pb::ListNotificationGroupsResponse>, Status> {
        let groups = self
            .0
            .notifier
            .groups()
            .into_iter()
            .map(|(receiver, group_key, n, next)| pb::NotificationGroup {
                receiver,
                group_key,
                alerts: n as u32,
                next_flush: timestamp(next),
            })
            .collect();
        Ok(Response::new(pb::ListNotificationGroupsResponse { groups }))
    }
}
