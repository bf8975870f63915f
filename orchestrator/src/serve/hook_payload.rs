//! What a hook's body says, by its `format`: the alerts of an alert group
//! (Alertmanager's webhook, version 4, and Grafana Alerting's webhook
//! contact point, version 1 — Alertmanager's payload with more fields), or
//! one JSON event. Each becomes an [`Incoming`]: its status, what templates
//! see as `alert.*` / `event.*`, and an alert's fingerprint, which the
//! matching, dedupe keys and `cancel_on_resolve` of `hooks` use alike for
//! both alert formats.
//!
//! A body that does not read is a 400 naming the field by its path
//! (`alerts[0].labels.site`); so is a fingerprint or a label that could not
//! be a key (too long, control characters).

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Map, Number, Value, json};

use super::error::{ApiError, parse_json};
use crate::config::HookFormat;
use crate::model::AlertStatus;

/// The longest fingerprint taken (Alertmanager's and Grafana's are 16 hex
/// digits): it becomes part of a run's dedupe key, which is indexed.
const MAX_FINGERPRINT: usize = 128;
/// The longest label name or value taken.
const MAX_LABEL: usize = 1024;

/// An alert group (fields we use; others ignored). The Grafana fields are
/// absent from Alertmanager's payloads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertGroup {
    version: Option<String>,
    receiver: Option<String>,
    #[serde(default)]
    group_labels: IndexMap<String, String>,
    #[serde(default)]
    common_labels: IndexMap<String, String>,
    #[serde(default)]
    common_annotations: IndexMap<String, String>,
    #[serde(rename = "externalURL")]
    external_url: Option<String>,
    alerts: Vec<Alert>,
    // Grafana Alerting's additions.
    org_id: Option<i64>,
    group_key: Option<String>,
    truncated_alerts: Option<u64>,
    title: Option<String>,
    state: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    status: AlertStatus,
    labels: IndexMap<String, String>,
    #[serde(default)]
    annotations: IndexMap<String, String>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    #[serde(rename = "generatorURL")]
    generator_url: Option<String>,
    fingerprint: Option<String>,
    // Grafana Alerting's additions.
    #[serde(rename = "silenceURL")]
    silence_url: Option<String>,
    #[serde(rename = "dashboardURL")]
    dashboard_url: Option<String>,
    #[serde(rename = "panelURL")]
    panel_url: Option<String>,
    #[serde(rename = "imageURL")]
    image_url: Option<String>,
    #[serde(rename = "ruleUID")]
    rule_uid: Option<String>,
    /// The query and expression results by reference id (`B`, `C`).
    values: Option<IndexMap<String, Number>>,
    value_string: Option<String>,
}

/// One alert or event, ready to be matched against triggers.
pub(super) struct Incoming {
    pub status: AlertStatus,
    /// What the payload is available as to templates (`alert.*` and `event.*`).
    pub payload: Value,
    /// An alert's fingerprint (computed from its labels if absent); `None`
    /// for JSON events, whose `match` keys are dotted fields.
    pub fingerprint: Option<String>,
}

impl Incoming {
    /// The value a `match` key is compared with: an alert's label, or a
    /// (dotted) field of a JSON event.
    pub fn field(&self, key: &str) -> Option<String> {
        let value = if self.fingerprint.is_some() {
            self.payload.get("labels").and_then(|l| l.get(key))
        } else {
            key.split('.').try_fold(&self.payload, |v, part| v.get(part))
        }?;
        Some(match value {
            Value::String(s) => s.clone(),
            Value::Null => return None,
            other => other.to_string(),
        })
    }
}

/// The payload as alerts or one event.
pub(super) fn parse(format: HookFormat, bytes: &[u8]) -> Result<Vec<Incoming>, ApiError> {
    match format {
        HookFormat::Alertmanager | HookFormat::Grafana => alerts(format, bytes),
        HookFormat::Json => {
            let event: Value = parse_json(bytes)?;
            if !event.is_object() {
                return Err(ApiError::bad_request("body must be a JSON object"));
            }
            Ok(vec![Incoming { status: AlertStatus::Firing, payload: event, fingerprint: None }])
        }
    }
}

/// The webhook version each alert format speaks.
fn version_of(format: HookFormat) -> (&'static str, &'static str) {
    match format {
        HookFormat::Grafana => ("1", "Grafana webhook"),
        _ => ("4", "Alertmanager webhook"),
    }
}

fn alerts(format: HookFormat, bytes: &[u8]) -> Result<Vec<Incoming>, ApiError> {
    let (want, what) = version_of(format);
    // serde would read a struct from an array of its fields, in order.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request(format!(
            "body must be a JSON object: a {what} payload with `alerts`"
        )));
    }
    let p: AlertGroup = parse_json(bytes)?;
    if let Some(v) = p.version.as_deref()
        && v != want
    {
        return Err(ApiError::bad_request(format!(
            "field `version`: {what} version `{}` is not supported (only {want})",
            quoted(v)
        )));
    }
    let mut out = Vec::with_capacity(p.alerts.len());
    for (i, a) in p.alerts.iter().enumerate() {
        check_labels(&format!("alerts[{i}].labels"), &a.labels)?;
        if let Some(fp) = &a.fingerprint {
            check_key(&format!("alerts[{i}].fingerprint"), fp, MAX_FINGERPRINT)?;
        }
        let fingerprint = a.fingerprint.clone().unwrap_or_else(|| fingerprint_of(&a.labels));
        let mut payload = json!({
            "status": a.status,
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": a.starts_at,
            "endsAt": a.ends_at,
            "generatorURL": a.generator_url,
            "fingerprint": fingerprint,
            "commonLabels": p.common_labels,
            "commonAnnotations": p.common_annotations,
            "groupLabels": p.group_labels,
            "externalURL": p.external_url,
            "receiver": p.receiver,
        });
        if format == HookFormat::Grafana
            && let Value::Object(fields) = &mut payload
        {
            grafana_fields(fields, &p, a);
        }
        out.push(Incoming { status: a.status, payload, fingerprint: Some(fingerprint) });
    }
    Ok(out)
}

/// What Grafana adds to each alert and to the group, for templates
/// (`alert.values.B`, `alert.dashboardURL`, `alert.title`…).
fn grafana_fields(fields: &mut Map<String, Value>, group: &AlertGroup, alert: &Alert) {
    let mut put = |key: &str, value: Value| {
        fields.insert(key.to_string(), value);
    };
    put("silenceURL", json!(alert.silence_url));
    put("dashboardURL", json!(alert.dashboard_url));
    put("panelURL", json!(alert.panel_url));
    put("imageURL", json!(alert.image_url));
    put("ruleUID", json!(alert.rule_uid));
    put("values", json!(alert.values.clone().unwrap_or_default()));
    put("valueString", json!(alert.value_string));
    put("orgId", json!(group.org_id));
    put("groupKey", json!(group.group_key));
    put("truncatedAlerts", json!(group.truncated_alerts));
    put("title", json!(group.title));
    put("state", json!(group.state));
    put("message", json!(group.message));
}

/// Labels are keys (matched, put in inputs, shown in lists): each name and
/// value at most [`MAX_LABEL`] characters with no control character.
fn check_labels(field: &str, labels: &IndexMap<String, String>) -> Result<(), ApiError> {
    for (name, value) in labels {
        check_key(field, name, MAX_LABEL)?;
        check_key(&format!("{field}.{name}"), value, MAX_LABEL)?;
    }
    Ok(())
}

fn check_key(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "field `{}`: longer than {max} characters",
            quoted(field)
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "field `{}`: `{}` has a control character",
            quoted(field),
            quoted(value)
        )));
    }
    Ok(())
}

/// Outside text in an error: on one line, control characters visible, cut
/// to 80 characters.
fn quoted(text: &str) -> String {
    let shown = crate::text::inline(text);
    if shown.chars().count() <= 80 {
        return shown.into_owned();
    }
    let mut cut: String = shown.chars().take(79).collect();
    cut.push('…');
    cut
}

/// A stable fingerprint of a label set, for payloads that carry none.
pub(super) fn fingerprint_of(labels: &IndexMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<_> = labels.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    for (k, v) in sorted {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_label_order() {
        let a: IndexMap<String, String> =
            serde_json::from_value(json!({"a": "1", "b": "2"})).unwrap();
        let b: IndexMap<String, String> =
            serde_json::from_value(json!({"b": "2", "a": "1"})).unwrap();
        assert_eq!(fingerprint_of(&a), fingerprint_of(&b));
    }

    #[test]
    fn version_4_payload_fields_reach_templates() {
        let body = json!({
            "version": "4", "status": "firing", "receiver": "lb", "externalURL": "http://am",
            "commonLabels": {"alertname": "SiteDown"},
            "alerts": [{"status": "firing", "labels": {"alertname": "SiteDown", "site": "dc01"},
                        "fingerprint": "abc", "startsAt": "2024-01-01T00:00:00Z"}]
        });
        let got = parse(HookFormat::Alertmanager, body.to_string().as_bytes()).unwrap();
        assert_eq!(got[0].fingerprint.as_deref(), Some("abc"));
        assert_eq!(got[0].payload["commonLabels"]["alertname"], "SiteDown");
        assert_eq!(got[0].payload["externalURL"], "http://am");
        assert!(got[0].payload.get("dashboardURL").is_none(), "no Grafana fields");
        let bad = json!({"alerts": [{"status": "firing", "labels": {"n": 1}}]});
        let e = parse(HookFormat::Alertmanager, bad.to_string().as_bytes()).err().unwrap();
        assert!(e.message.contains("alerts[0].labels.n"), "{}", e.message);
    }

    const GRAFANA: &str = include_str!("../../../tests/fixtures/grafana/firing.json");

    #[test]
    fn a_grafana_payload_fans_out_with_its_fields_for_templates() {
        let got = parse(HookFormat::Grafana, GRAFANA.as_bytes()).unwrap();
        assert_eq!(got.len(), 2);
        let first = &got[0];
        assert_eq!(first.status, AlertStatus::Firing);
        assert_eq!(first.fingerprint.as_deref(), Some("c6eadffa33fcdf37"));
        assert_eq!(first.field("alertname").as_deref(), Some("SiteDown"));
        assert_eq!(first.payload["values"]["B"], json!(97.3));
        assert_eq!(first.payload["values"]["C"], json!(1), "integers stay integers");
        assert_eq!(first.payload["orgId"], 1);
        assert_eq!(first.payload["state"], "alerting");
        assert_eq!(first.payload["truncatedAlerts"], 0);
        assert!(first.payload["silenceURL"].as_str().unwrap().contains("/alerting/silence/new"));
        assert!(first.payload["valueString"].as_str().unwrap().starts_with("[ var='B'"));
        assert_eq!(first.payload["commonLabels"]["team"], "dr");
        assert_eq!(got[1].fingerprint.as_deref(), Some("bc97ff14869b13e3"));
    }

    #[test]
    fn a_grafana_hook_refuses_another_version_and_alertmanager_refuses_grafanas() {
        let mut body: Value = serde_json::from_str(GRAFANA).unwrap();
        let e = parse(HookFormat::Alertmanager, body.to_string().as_bytes()).err().unwrap();
        assert!(
            e.message.contains("field `version`") && e.message.contains("only 4"),
            "{}",
            e.message
        );
        body["version"] = json!("2");
        let e = parse(HookFormat::Grafana, body.to_string().as_bytes()).err().unwrap();
        assert_eq!(
            e.message,
            "field `version`: Grafana webhook version `2` is not supported (only 1)"
        );
    }

    #[test]
    fn grafana_values_must_be_numbers_and_names_the_field() {
        let mut body: Value = serde_json::from_str(GRAFANA).unwrap();
        body["alerts"][1]["values"]["B"] = json!("high");
        let e = parse(HookFormat::Grafana, body.to_string().as_bytes()).err().unwrap();
        assert!(e.message.starts_with("field `alerts[1].values.B`"), "{}", e.message);
        body["alerts"][1]["values"] = Value::Null;
        assert!(parse(HookFormat::Grafana, body.to_string().as_bytes()).is_ok(), "null values");
    }

    #[test]
    fn fingerprints_and_labels_that_cannot_be_keys_are_refused_naming_the_field() {
        let mut body: Value = serde_json::from_str(GRAFANA).unwrap();
        body["alerts"][0]["fingerprint"] = json!("x".repeat(129));
        let e = parse(HookFormat::Grafana, body.to_string().as_bytes()).err().unwrap();
        assert_eq!(e.message, "field `alerts[0].fingerprint`: longer than 128 characters");
        body["alerts"][0]["fingerprint"] = json!("ab\u{1b}[2J");
        let e = parse(HookFormat::Grafana, body.to_string().as_bytes()).err().unwrap();
        assert!(
            e.message.starts_with("field `alerts[0].fingerprint`: `ab\\x1b[2J` has a control"),
            "{}",
            e.message
        );
        body["alerts"][0]["fingerprint"] = json!("ok");
        body["alerts"][1]["labels"]["site"] = json!("dc\n01");
        let e = parse(HookFormat::Grafana, body.to_string().as_bytes()).err().unwrap();
        assert!(e.message.starts_with("field `alerts[1].labels.site`"), "{}", e.message);
    }

    #[test]
    fn a_grafana_alert_without_fingerprint_gets_one_from_its_labels() {
        let mut body: Value = serde_json::from_str(GRAFANA).unwrap();
        body["alerts"][0].as_object_mut().unwrap().remove("fingerprint");
        let got = parse(HookFormat::Grafana, body.to_string().as_bytes()).unwrap();
        let labels: IndexMap<String, String> =
            serde_json::from_value(body["alerts"][0]["labels"].clone()).unwrap();
        assert_eq!(got[0].fingerprint, Some(fingerprint_of(&labels)));
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        let e = parse(HookFormat::Grafana, br#" ["1", {}, []]"#).err().unwrap();
        assert_eq!(
            e.message,
            "body must be a JSON object: a Grafana webhook payload with `alerts`"
        );
    }

    #[test]
    fn missing_alerts_or_status_are_named() {
        let e = parse(HookFormat::Grafana, br#"{"version": "1"}"#).err().unwrap();
        assert!(e.message.contains("alerts"), "{}", e.message);
        let e = parse(HookFormat::Grafana, br#"{"alerts": [{"labels": {}}]}"#).err().unwrap();
        assert!(e.message.contains("alerts[0]") && e.message.contains("status"), "{}", e.message);
    }

    #[test]
    fn json_events_match_dotted_fields() {
        let ev = Incoming {
            status: AlertStatus::Firing,
            fingerprint: None,
            payload: json!({"type": "incident", "service": {"tier": 1}}),
        };
        assert_eq!(ev.field("service.tier").as_deref(), Some("1"));
        assert_eq!(ev.field("service.name"), None);
    }
}
