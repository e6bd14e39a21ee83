//! The `Alerts` service: thin adapters over [`crate::alert::manager::Manager`].
use super::Ctx;
use crate::alert::eval::State;
use crate::alert::rules::Kind;
use crate::notify::route::Matcher;
use crate::pb::{self, alerts_server::Alerts};
use crate::query::timestamp;
use std::collections::HashMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AlertsApi(pub Arc<Ctx>);

fn dur(ms: i64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 })
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
        let alerts = self
            .0
            .alerts
            .alerts()
            .into_iter()
            .filter(|(_, _, a)| ms.iter().all(|m| m.matches(&a.labels)))
            .map(|(group, rule, a)| pb::AlertInfo {
                labels: map(&a.labels),
                annotations: map(&a.annotations),
                state: a.state.as_str().into(),
                active_at: timestamp(a.active_at),
                fired_at: a.fired_at.and_then(timestamp),
                resolved_at: a.resolved_at.and_then(timestamp),
                value: a.value,
                group,
                rule,
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
}
