//! Offline checks against the generated CRD schemas: the OpenAPI v3 subset that the API server
//! enforces (types, required, enums, bounds, unknown fields) plus the CEL
//! `x-kubernetes-validations`, and the structural-schema rules the API server demands of a CRD.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::{CarrierTrunk, NumberOwnership};

/// Both CRDs, as `trunkgate-operator crd` prints them: the derived schemas with
/// [`refine`]'s rules, so that the API server refuses what compile() would refuse.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        refine(CarrierTrunk::crd(), &trunk_rules()),
        refine(NumberOwnership::crd(), &ownership_rules()),
    ]
}

/// The schema of one kind as [`crds`] has it.
pub fn schema_of(kind: &str) -> Value {
    crds()
        .iter()
        .find(|c| c.spec.names.kind == kind)
        .map(open_api_schema)
        .unwrap_or(Value::Null)
}

/// A host name or IPv4 address (RFC 1123 labels; compile()'s `valid_host`), or an IPv6
/// reference in brackets, then an optional port 1-65535 without leading zeros.
const HOSTPORT: &str = "([A-Za-z0-9-]{1,63}([.][A-Za-z0-9-]{1,63})*|\\\\[[0-9A-Fa-f:.]+\\\\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?";
/// A transport parameter names one of the transports the edge speaks (RFC 3261 §19.1.1).
const TRANSPORT_RULE: (&str, &str) = (
    "!self.matches(';transport=') || self.matches(';transport=(?i:udp|tcp|tls)(;|$)')",
    "'\\'' + self + '\\' names a transport other than udp, tcp or tls'",
);

/// A price: digits with up to 6 decimals (what `compile()`'s rate parser takes).
const DECIMAL_RULE: &str = "self.matches('^[0-9]{1,9}([.][0-9]{1,6})?$')";

/// One CEL rule: where (a path of property names, `[]` for list items), the rule and a
/// `messageExpression` that names the offending value.
struct PathRule {
    path: &'static str,
    rule: String,
    message: String,
}

fn rule(path: &'static str, rule: impl Into<String>, message: impl Into<String>) -> PathRule {
    PathRule {
        path,
        rule: rule.into(),
        message: message.into(),
    }
}

/// Rules on list entries (so that the API server, like compile(), names the entry's index and
/// value), and the cross-field rules the derive cannot express.
fn trunk_rules() -> Vec<PathRule> {
    let uri = |scheme: &str| format!("self.matches('^{scheme}([^@ ]+@)?{HOSTPORT}(;[^; ]*)*$')");
    vec![
        rule(
            "spec.inbound.allowedCidrs[]",
            "isCIDR(self)",
            "'\\'' + self + '\\' is not a CIDR such as 203.0.113.0/28 or 2001:db8::/64'",
        ),
        rule(
            "spec.inbound.hostnames[]",
            "self.matches('^[A-Za-z0-9-]{1,63}([.][A-Za-z0-9-]{1,63})*$')",
            "'\\'' + self + '\\' is not a host name'",
        ),
        rule(
            "spec.inbound.destination",
            uri("sips?:"),
            "'\\'' + self + '\\' is not a SIP URI such as sip:voice-platform.acme.svc.cluster.local:5060'",
        ),
        rule(
            "spec.inbound.destination",
            TRANSPORT_RULE.0,
            TRANSPORT_RULE.1,
        ),
        rule(
            "spec.outbound.targets[].uri",
            uri("(sips?:)?"),
            "'\\'' + self + '\\' is not a SIP URI or host such as sip:sbc1.carrier.example:5060;transport=udp'",
        ),
        rule(
            "spec.outbound.targets[].uri",
            TRANSPORT_RULE.0,
            TRANSPORT_RULE.1,
        ),
        rule(
            "spec.routes[].prefix",
            "self.matches('^[+][0-9]{0,15}$')",
            "'\\'' + self + '\\' is not + followed by up to 15 digits'",
        ),
        rule(
            "spec.routes[].rate.perMinute",
            DECIMAL_RULE,
            "'\\'' + self + '\\' is not a price such as 0.0125 (digits, up to 6 decimals)'",
        ),
        rule(
            "spec.routes[].rate.connectionFee",
            DECIMAL_RULE,
            "'\\'' + self + '\\' is not a price such as 0.01 (digits, up to 6 decimals)'",
        ),
        rule(
            "spec.routes[].rate.currency",
            "self.matches('^[A-Z]{3}$')",
            "'\\'' + self + '\\' is not an ISO 4217 currency code such as USD'",
        ),
        rule(
            "spec.routes[].rate.increments",
            "self.matches('^[1-9][0-9]{0,3}/[1-9][0-9]{0,3}$')",
            "'\\'' + self + '\\' is not billing increments first/next in seconds such as 60/60 or 1/1'",
        ),
        rule(
            "spec.media.codecs[]",
            "self.matches('^[!-~]+$')",
            "'\\'' + self + '\\' is not an SDP encoding name such as PCMU'",
        ),
        rule(
            "spec.media",
            "!has(self.srtp) || self.srtp == 'Disabled' || !has(self.relay) || self.relay",
            "'srtp needs relay: true (SRTP ends in the edge relay)'",
        ),
        rule(
            "spec",
            "!has(self.routes) || size(self.routes) == 0 || has(self.outbound)",
            "'routes need spec.outbound: there is no carrier target to send those calls to'",
        ),
    ]
}

fn ownership_rules() -> Vec<PathRule> {
    vec![
        rule(
            "spec.numbers[]",
            "self.matches('^[+][1-9][0-9]{0,13}[*]$') || self.matches('^[+][1-9][0-9]{1,14}$') || (self.matches('^[+][1-9][0-9]{1,14}-[+][1-9][0-9]{1,14}$') && size(self.split('-')[0]) == size(self.split('-')[1]) && self.split('-')[0] <= self.split('-')[1])",
            "'\\'' + self + '\\' is not an E.164 number (+ then up to 15 digits), a range +A-+B of equal length with A <= B, or a prefix ending in *'",
        ),
        rule(
            "spec.verification.verifiedBy",
            "self.matches('[^ \\t\\n\\r\\f]')",
            "'must name who at the carrier verified the numbers'",
        ),
    ]
}

/// Adds `rules` to the CRD's schema and drops the integer formats the API server does not
/// know (`uint32`, `uint64`: every apply would warn "unrecognized format").
fn refine(mut crd: CustomResourceDefinition, rules: &[PathRule]) -> CustomResourceDefinition {
    let Some(version) = crd.spec.versions.first_mut() else {
        return crd;
    };
    let Some(schema) = version
        .schema
        .as_mut()
        .and_then(|s| s.open_api_v3_schema.as_mut())
    else {
        return crd;
    };
    let Ok(mut json) = serde_json::to_value(&*schema) else {
        return crd;
    };
    strip_unknown_formats(&mut json);
    for r in rules {
        if let Some(node) = node_at(&mut json, r.path)
            && let Some(obj) = node.as_object_mut()
        {
            let list = obj
                .entry("x-kubernetes-validations")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(list) = list.as_array_mut() {
                list.push(serde_json::json!({"rule": r.rule, "messageExpression": r.message}));
            }
        }
    }
    // The API server checks `date-time` itself (and CEL then sees a timestamp, not a string).
    if let Some(at) = node_at(&mut json, "spec.verification.verifiedAt")
        && let Some(obj) = at.as_object_mut()
    {
        obj.insert("format".into(), "date-time".into());
    }
    if let Ok(refined) = serde_json::from_value(json) {
        *schema = refined;
    }
    crd
}

/// The schema node of `path` (`a.b[].c`), descending `properties` and `items`.
fn node_at<'a>(schema: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut node = schema;
    for part in path.split('.') {
        let (name, items) = match part.strip_suffix("[]") {
            Some(n) => (n, true),
            None => (part, false),
        };
        node = node.get_mut("properties")?.get_mut(name)?;
        if items {
            node = node.get_mut("items")?;
        }
    }
    Some(node)
}

fn strip_unknown_formats(v: &mut Value) {
    match v {
        Value::Object(obj) => {
            if matches!(
                obj.get("format").and_then(Value::as_str),
                Some("uint8" | "uint16" | "uint32" | "uint64" | "int8" | "int16" | "uint")
            ) {
                obj.remove("format");
            }
            for child in obj.values_mut() {
                strip_unknown_formats(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_unknown_formats),
        _ => {}
    }
}

/// The CRDs as one multi-document YAML file.
pub fn crds_yaml() -> String {
    let mut out =
        String::from("# Generated by `trunkgate-operator crd` (make crds). Do not edit.\n");
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd).unwrap_or_default());
    }
    out
}

/// The openAPIV3Schema of a CRD as JSON.
pub fn open_api_schema(crd: &CustomResourceDefinition) -> Value {
    crd.spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null)
}

/// One finding: JSON path and message.
pub type Finding = (String, String);

/// Checks a document against a schema as the API server would, CEL rules included.
/// `metadata` is not descended into (the API server checks it on its own terms).
pub fn validate_document(schema: &Value, doc: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    // The API server drops null values of fields that are not nullable before it validates.
    let mut doc = doc.clone();
    prune_nulls(schema, &mut doc);
    let doc = &doc;
    walk(schema, doc, "", &mut out);
    if out.is_empty()
        && let Err(errors) = kube::core::cel::Validator::new().validate(schema, doc, None)
    {
        for e in errors.into_vec() {
            out.push((e.field_path.clone(), e.message.clone()));
        }
    }
    out
}

/// Removes object fields whose value is null where the schema does not say `nullable`.
fn prune_nulls(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(obj) => {
            let props = schema.get("properties");
            obj.retain(|k, child| {
                let nullable = props.and_then(|p| p.get(k)).and_then(|s| s.get("nullable"))
                    == Some(&Value::Bool(true));
                !child.is_null() || nullable
            });
            for (k, child) in obj.iter_mut() {
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    prune_nulls(s, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                items.iter_mut().for_each(|i| prune_nulls(s, i));
            }
        }
        _ => {}
    }
}

fn walk(schema: &Value, v: &Value, path: &str, out: &mut Vec<Finding>) {
    let here = |p: &str| {
        if p.is_empty() {
            "(root)".to_string()
        } else {
            p.to_string()
        }
    };
    if v.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            out.push((here(path), "must not be null".into()));
        }
        return;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ok = match ty {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    };
    if !ok {
        out.push((here(path), format!("must be of type {}", ty.unwrap_or("?"))));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let names: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
        out.push((here(path), format!("must be one of {}", names.join(", "))));
    }
    if let (Some(s), Some(max)) = (v.as_str(), schema.get("maxLength").and_then(Value::as_u64))
        && s.chars().count() as u64 > max
    {
        out.push((here(path), format!("must be at most {max} characters")));
    }
    if let Some(n) = v.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            out.push((here(path), format!("must be at least {min}")));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            out.push((here(path), format!("must be at most {max}")));
        }
    }
    if let (Some(s), Some("date-time")) = (v.as_str(), schema.get("format").and_then(Value::as_str))
        && chrono::DateTime::parse_from_rfc3339(s).is_err()
    {
        out.push((here(path), format!("'{s}' is not an RFC 3339 date-time")));
    }
    if let Some(items) = v.as_array() {
        if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("set") {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    out.push((format!("{path}[{i}]"), format!("duplicate value {item}")));
                }
            }
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            out.push((here(path), format!("must have at most {max} items")));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                walk(item_schema, item, &format!("{path}[{i}]"), out);
            }
        }
    }
    if let Some(obj) = v.as_object() {
        if path == "metadata" {
            return;
        }
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(r) {
                    out.push((join(path, r), "is required".into()));
                }
            }
        }
        let preserve =
            schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        for (k, child) in obj {
            if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            match props.and_then(|p| p.get(k)) {
                Some(s) => walk(s, child, &join(path, k), out),
                None => match schema.get("additionalProperties") {
                    Some(s) if s.is_object() => walk(s, child, &join(path, k), out),
                    _ if preserve || props.is_none() => {}
                    _ => out.push((
                        join(path, k),
                        "unknown field (the API server would drop it; check the spelling)".into(),
                    )),
                },
            }
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The API server only accepts structural schemas: every node typed, no `$ref`, and no
/// `additionalProperties` beside `properties`. Returns the paths that break a rule.
pub fn structural_violations(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check_structural(schema, "", &mut out);
    out
}

fn check_structural(s: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = s.as_object() else { return };
    if obj.contains_key("$ref") {
        out.push(format!("{path}: $ref"));
    }
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !obj.contains_key("type") && !int_or_string && !preserve {
        out.push(format!("{path}: no type"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!("{path}: additionalProperties beside properties"));
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if obj.contains_key(key) {
            out.push(format!("{path}: {key}"));
        }
    }
    if let Some(en) = obj.get("enum").and_then(Value::as_array)
        && en.iter().any(Value::is_null)
    {
        out.push(format!("{path}: null in enum"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[]"), out);
    }
    if let Some(ap) = obj.get("additionalProperties") {
        check_structural(ap, &format!("{path}{{}}"), out);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_schemas_are_structural() {
        for crd in crds() {
            let schema = open_api_schema(&crd);
            assert!(schema.is_object(), "{} has a schema", crd.spec.names.kind);
            let v = structural_violations(&schema);
            assert!(v.is_empty(), "{}: {v:?}", crd.spec.names.kind);
            let v = crd.spec.versions[0]
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref());
            assert!(v.is_some(), "status subresource");
        }
    }

    #[test]
    fn structural_check_catches_what_the_api_server_refuses() {
        let bad = serde_json::json!({"type": "object", "properties": {
            "a": {"description": "untyped"},
            "b": {"$ref": "#/x", "type": "object"},
            "c": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "d": {"type": "string", "enum": ["A", null]},
        }});
        assert_eq!(structural_violations(&bad).len(), 4);
    }

    fn trunk_schema() -> Value {
        schema_of("CarrierTrunk")
    }

    fn trunk(spec: Value) -> Value {
        serde_json::json!({"apiVersion": "trunkgate.io/v1alpha1", "kind": "CarrierTrunk",
            "metadata": {"name": "t", "namespace": "n"}, "spec": spec})
    }

    #[test]
    fn schema_and_cel_rules_table() {
        let good = serde_json::json!({"inbound": {"allowedCidrs": ["203.0.113.0/28"], "destination": "sip:p.svc:5060"}});
        let cases: Vec<(Value, Option<&str>)> = vec![
            (good.clone(), None),
            (
                serde_json::json!({"inbound": {"allowedCidrs": [], "destination": "sip:p"}}),
                Some("at least one"),
            ),
            (
                serde_json::json!({"inbound": {"allowedCidrs": ["203.0.113.0"], "destination": "sip:p"}}),
                Some("CIDR"),
            ),
            (
                serde_json::json!({"inbound": {"allowedCidrs": ["10.0.0.0/8"], "destination": "http://x"}}),
                Some("sip:"),
            ),
            (
                serde_json::json!({"inbound": {"alowedCidrs": ["10.0.0.0/8"], "destination": "sip:p"}}),
                Some("unknown field"),
            ),
            (
                serde_json::json!({"inbound": {"allowedCidrs": ["10.0.0.0/8"], "destination": "sip:p"},
                "outbound": {"targets": [{"uri": "sip:a", "priority": 0}]}}),
                Some("priority"),
            ),
            (
                serde_json::json!({"inbound": {"allowedCidrs": ["10.0.0.0/8"], "destination": "sip:p"},
                "outbound": {"targets": [{"uri": "sip:a"}], "callerIdPolicy": "Lax"}}),
                Some("one of"),
            ),
            (
                serde_json::json!({"inbound": {"allowedCidrs": ["10.0.0.0/8"], "destination": "sip:p",
                "numberFormat": {"countryCode": "+64"}}}),
                Some("countryCode"),
            ),
            (
                serde_json::json!({"inbound": {"allowedCidrs": ["10.0.0.0/8"], "destination": "sip:p"},
                "routes": [{"prefix": "64"}]}),
                Some("'64' is not + followed by up to 15 digits"),
            ),
            (
                serde_json::json!({"inbound": {"allowedCidrs": ["10.0.0.0/8"], "destination": "sip:p"},
                "outbound": {"targets": [{"uri": "sip:a"}]},
                "routes": [{"prefix": "+64", "rate": {"perMinute": "0.01.2", "currency": "USD"}}]}),
                Some("'0.01.2' is not a price"),
            ),
            (
                serde_json::json!({"inbound": {"allowedCidrs": ["10.0.0.0/8"], "destination": "sip:p"},
                "outbound": {"targets": [{"uri": "sip:a"}]},
                "routes": [{"prefix": "+64", "rate": {"perMinute": "0.01", "currency": "usd"}}]}),
                Some("ISO 4217"),
            ),
            (
                serde_json::json!({"inbound": {"allowedCidrs": ["10.0.0.0/8"], "destination": "sip:p"},
                "outbound": {"targets": [{"uri": "sip:a"}]},
                "routes": [{"prefix": "+64", "rate": {"perMinute": "0.01", "currency": "USD", "increments": "0/60"}}]}),
                Some("billing increments"),
            ),
            (
                serde_json::json!({"inbound": {"allowedCidrs": ["10.0.0.0/8"], "destination": "sip:p"},
                "outbound": {"targets": [{"uri": "sip:a"}]},
                "routes": [{"prefix": "+64", "rate": {"perMinute": "0.0125", "currency": "USD", "increments": "30/6", "connectionFee": "0.01"}}]}),
                None,
            ),
            (
                serde_json::json!({"inbound": {"allowedCidrs": ["10.0.0.0/8"], "destination": "sip:p"},
                "media": {"relay": false, "srtp": "Required"}}),
                Some("srtp needs relay: true"),
            ),
            (
                serde_json::json!({"inbound": {"allowedCidrs": ["10.0.0.0/8"], "destination": "sip:p"},
                "media": {"relay": false, "srtp": "Disabled"}}),
                None,
            ),
        ];
        for (spec, want) in cases {
            let found = validate_document(&trunk_schema(), &trunk(spec.clone()));
            match want {
                None => assert!(found.is_empty(), "{spec}: {found:?}"),
                Some(w) => assert!(
                    found.iter().any(|(_, m)| m.contains(w)),
                    "{spec}: wanted '{w}', got {found:?}"
                ),
            }
        }
    }

    #[test]
    fn number_entry_cel_rule_table() {
        let schema = schema_of("NumberOwnership");
        let doc = |n: &str| {
            serde_json::json!({"apiVersion": "trunkgate.io/v1alpha1", "kind": "NumberOwnership",
                "metadata": {"name": "x"}, "spec": {"trunkRef": {"name": "t"}, "kind": "Byoc", "numbers": [n]}})
        };
        for ok in [
            "+6498879333",
            "+6498879300-+6498879399",
            "+64988793*",
            "+1*",
        ] {
            assert!(validate_document(&schema, &doc(ok)).is_empty(), "{ok}");
        }
        for bad in [
            "6498879333",
            "+6498879399-+6498879300",
            "+649887930-+6498879399",
            "+0123",
            "+64 9",
        ] {
            assert!(!validate_document(&schema, &doc(bad)).is_empty(), "{bad}");
        }
    }
}
