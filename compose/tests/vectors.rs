//! Runs every conformance vector in testdata/compose (see its README.md for
//! the formats). Each file's case count is asserted so a dropped case fails.

use compose::yaml::Node;
use compose::{dotenv, normalize, ports, template, volumes};
use serde_json::{json, Value as J};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;

fn records(file: &str, expected_count: usize) -> Vec<J> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/compose")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let recs: Vec<J> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), expected_count, "{file}: number of vectors");
    recs
}

fn env_of(r: &J, key: &str) -> BTreeMap<String, String> {
    r[key]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks an error against `{message, contains}`; returns a failure text.
fn check_error(r: &J, got: Result<J, String>) -> Result<(), String> {
    let expected_err = &r["error"];
    match (got, expected_err.is_null()) {
        (Ok(_), false) => Err("expected an error, got success".into()),
        (Err(e), true) => Err(format!("unexpected error: {e}")),
        (Err(e), false) => {
            if let Some(m) = expected_err["message"].as_str() {
                if e != m {
                    return Err(format!("error {e:?} != {m:?}"));
                }
            }
            if let Some(c) = expected_err["contains"].as_str() {
                if !e.contains(c) {
                    return Err(format!("error {e:?} lacks {c:?}"));
                }
            }
            Ok(())
        }
        (Ok(v), true) => compare(r, &v),
    }
}

/// Zero values (false, 0, "") are absent in the vectors' notation.
fn strip_zero(v: &J) -> J {
    match v {
        J::Object(m) => J::Object(
            m.iter()
                .filter(|(_, v)| {
                    !matches!(v, J::Bool(false)) && v.as_i64() != Some(0) && v.as_str() != Some("")
                })
                .map(|(k, v)| (k.clone(), strip_zero(v)))
                .collect(),
        ),
        J::Array(a) => J::Array(a.iter().map(strip_zero).collect()),
        v => v.clone(),
    }
}

fn subset(expected: &J, got: &J) -> bool {
    match (expected, got) {
        (J::Object(e), J::Object(g)) => e
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| subset(v, gv))),
        (J::Array(e), J::Array(g)) => {
            e.len() == g.len() && e.iter().zip(g).all(|(a, b)| subset(a, b))
        }
        (e, g) => e == g,
    }
}

fn compare(r: &J, got: &J) -> Result<(), String> {
    let expected = &r["expected"];
    let ok = match r["compare"].as_str().unwrap_or("exact") {
        "exact" => strip_zero(expected) == strip_zero(got),
        "exact-unordered" => {
            let (e, g) = (strip_zero(expected), strip_zero(got));
            let (e, g) = (e.as_array().unwrap(), g.as_array().unwrap());
            e.len() == g.len() && e.iter().all(|x| g.contains(x))
        }
        "fields" => {
            let len_ok = r["expected_len"].as_u64().is_none_or(|n| {
                got.as_array()
                    .map(Vec::len)
                    .or(got.as_object().map(|o| o.len()))
                    == Some(n as usize)
            });
            let fields_ok = match (expected, got) {
                (J::Array(e), J::Array(g)) => {
                    e.len() <= g.len() && e.iter().zip(g).all(|(a, b)| subset(a, b))
                }
                (e, g) => subset(e, g),
            };
            len_ok && fields_ok
        }
        "subset" => expected
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| got.get(k) == Some(v)),
        "get" => expected
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| got.get(k).unwrap_or(&json!("")) == v),
        other => return Err(format!("unknown compare {other}")),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("expected {expected}, got {got}"))
    }
}

fn run(file: &str, count: usize, case: impl Fn(&J) -> Result<(), String>) {
    let recs = records(file, count);
    let failures: Vec<String> = recs
        .iter()
        .filter_map(|r| case(r).err().map(|e| format!("{}: {e}", r["id"])))
        .collect();
    println!(
        "{file}: {}/{} passed",
        recs.len() - failures.len(),
        recs.len()
    );
    assert!(
        failures.is_empty(),
        "{file}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn interpolation() {
    run("interpolation.jsonl", 119, |r| {
        let env = env_of(r, "env");
        let lookup = |k: &str| env.get(k).cloned();
        let template = r["template"].as_str().unwrap();
        let via = r["via"].as_str().unwrap();
        let mut warnings = Vec::new();
        let result = if via.starts_with("interpolation.Interpolate") {
            let path = via
                .split("(path ")
                .nth(1)
                .map(|p| p.split([')', ',']).next().unwrap())
                .unwrap_or("myservice.environment.TESTVAR");
            let mut node = Node::str(template);
            compose::interpolate::interpolate(&mut node, path, &lookup, &mut warnings)
                .map(|_| node.to_json())
                .map_err(|e| e.to_string())
        } else {
            let got = template::substitute(template, &lookup, &mut warnings);
            if let (Err(template::TemplateError::MissingRequired { variable, reason }), Some(v)) =
                (&got, r["error"]["variable"].as_str())
            {
                if variable != v || reason != r["error"]["reason"].as_str().unwrap() {
                    return Err(format!("missing-required fields {variable:?} {reason:?}"));
                }
            }
            got.map(J::String).map_err(|e| e.to_string())
        };
        if let Some(n) = r["warnings"].as_u64() {
            if warnings.len() as u64 != n {
                return Err(format!("{} warnings, expected {n}", warnings.len()));
            }
        }
        check_error(r, result)
    });
}

#[test]
fn interpolation_operators() {
    run("interpolation-operators.jsonl", 12, |r| {
        let (_, op, _) =
            template::split_inner(r["inner"].as_str().unwrap()).ok_or("no operator")?;
        (op == r["operator"].as_str())
            .then_some(())
            .ok_or(format!("operator {op:?}"))
    });
}

#[test]
fn dotenv_files() {
    run("dotenv.jsonl", 92, |r| {
        let env = env_of(r, "lookup");
        let queried = RefCell::new(Vec::new());
        let lookup = |k: &str| {
            queried.borrow_mut().push(k.to_string());
            env.get(k).cloned()
        };
        let texts: Vec<&str> = r["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect();
        let api = r["api"].as_str().unwrap();
        let mut out = dotenv::EnvMap::new();
        let result = texts
            .iter()
            .try_for_each(|t| dotenv::parse_into(t, &mut out, &lookup))
            .map_err(|e| e.to_string());
        if api.starts_with("Read") {
            out.retain(|k, _| !k.trim_start().starts_with(|c: char| c.is_ascii_digit()));
        }
        for absent in r["absent"].as_array().into_iter().flatten() {
            if out.contains_key(absent.as_str().unwrap()) {
                return Err(format!("{absent} should be absent"));
            }
        }
        for q in r["lookup_queried"].as_array().into_iter().flatten() {
            if !queried.borrow().iter().any(|x| x == q.as_str().unwrap()) {
                return Err(format!("{q} was not looked up"));
            }
        }
        check_error(
            r,
            result.map(|_| J::Object(out.into_iter().map(|(k, v)| (k, J::String(v))).collect())),
        )
    });
}

fn load_service(r: &J, key: &str) -> Result<J, String> {
    let env = env_of(r, "env").into_iter().collect();
    let normalize = r["options"]["normalize"].as_bool().unwrap_or(true);
    let model = compose::loader::load_str(
        r["compose_yaml"].as_str().unwrap(),
        env,
        Path::new("/project"),
        normalize,
    )
    .map_err(|e| e.to_string())?;
    let service = r["service"].as_str().unwrap_or_default();
    Ok(model
        .get("services")
        .and_then(|s| s.get(service))
        .and_then(|s| s.get(key))
        .map(Node::to_json)
        .unwrap_or(J::Null))
}

/// Drops the `file:line:col: ` and `services.x.key.n: ` prefixes our loader
/// adds, leaving compose-go's own text.
fn without_position(e: String) -> String {
    let e = match e.split_once(": ") {
        Some((pos, rest)) if pos.matches(':').count() == 2 => rest.to_string(),
        _ => e,
    };
    match e.split_once(": ") {
        Some((path, rest)) if path.starts_with("services.") && !path.contains(' ') => {
            rest.to_string()
        }
        _ => e,
    }
}

#[test]
fn ports_long_form() {
    run("ports.jsonl", 26, |r| {
        let input = &r["input"];
        let result = match r["function"].as_str().unwrap() {
            "ParsePortConfig" => ports::parse_port_config(input.as_str().unwrap())
                .map(|v| J::Array(v.iter().map(Node::to_json).collect())),
            "transformPorts" => {
                let list: Vec<Node> = input
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(Node::from_json)
                    .collect();
                ports::transform_ports(&list, r["ignore_parse_error"].as_bool().unwrap_or(false))
                    .map(|v| J::Array(v.iter().map(Node::to_json).collect()))
            }
            "portDefaults" => {
                let mut n = Node::from_json(input);
                ports::port_defaults(n.as_map_mut().unwrap());
                Ok(n.to_json())
            }
            "load" => load_service(r, "ports").map_err(without_position),
            f => Err(format!("unknown function {f}")),
        };
        check_error(r, result)
    });
}

#[test]
fn ports_nat() {
    run("ports-nat.jsonl", 49, |r| {
        let input = &r["input"];
        let s = input.as_str().unwrap_or_default();
        let result: Result<J, String> = match r["function"].as_str().unwrap() {
            "ParsePort" if s.is_empty() => Ok(json!(0)),
            "ParsePort" => ports::parse_u16(s).map(|p| json!(p)),
            "ParsePortRangeToInt" | "ParsePortRange" => ports::parse_port_range(s).map(|(a, b)| json!([a, b])),
            "SplitProtoPort" => Ok(json!(ports::split_proto_port(s))),
            "NewPort" => {
                let (proto, port) = (input[0].as_str().unwrap(), input[1].as_str().unwrap());
                ports::parse_port_range(port).map(|(a, b)| {
                    let m = ports::PortMapping { start: a, end: b, proto: proto.into(), host_ip: String::new(), host_port: String::new() };
                    let port = if a == b { a.to_string() } else { format!("{a}-{b}") };
                    json!({"string": m.key(), "proto": proto, "port": port, "int": a})
                })
            }
            "ParsePortSpec" => ports::parse_port_spec(s)
                .map(|v| J::Array(v.iter().map(|m| json!({"port": m.key(), "host_ip": m.host_ip, "host_port": m.host_port})).collect())),
            "ParsePortSpecs" => port_specs(input),
            f => Err(format!("unknown function {f}")),
        };
        if r["compare"] == "partial" {
            return result.and_then(|got| check_partial(&r["expected"], &got));
        }
        check_error(r, result)
    });
}

fn port_specs(input: &J) -> Result<J, String> {
    let mut out = serde_json::Map::new();
    for spec in input.as_array().unwrap() {
        for m in ports::parse_port_spec(spec.as_str().unwrap())? {
            let list = out.entry(m.key()).or_insert_with(|| json!([]));
            list.as_array_mut()
                .unwrap()
                .push(json!({"host_ip": m.host_ip, "host_port": m.host_port}));
        }
    }
    Ok(J::Object(out))
}

fn check_partial(expected: &J, got: &J) -> Result<(), String> {
    for key in expected["ports_include"].as_array().unwrap() {
        if got.get(key.as_str().unwrap()).is_none() {
            return Err(format!("{key} missing from {got}"));
        }
    }
    let each = &expected["each_binding_list"];
    for (key, bindings) in got.as_object().unwrap() {
        let b = bindings.as_array().unwrap();
        let port = key.split('/').next().unwrap();
        let want_port = if each["host_port"] == "container-port" {
            port
        } else {
            each["host_port"].as_str().unwrap()
        };
        if b.len() as u64 != each["length"].as_u64().unwrap()
            || b[0]["host_ip"] != each["host_ip"]
            || b[0]["host_port"] != want_port
        {
            return Err(format!("bindings of {key}: {bindings}"));
        }
    }
    Ok(())
}

#[test]
fn volumes_long_form() {
    run("volumes.jsonl", 101, |r| {
        let input = &r["input"];
        let result = match r["function"].as_str().unwrap() {
            "ParseVolume" if r["compare"] == "has-source" => {
                let has = volumes::parse_volume(input.as_str().unwrap())
                    .ok()
                    .and_then(|v| v.get("source").cloned())
                    .is_some();
                return (has == r["has_source"].as_bool().unwrap())
                    .then_some(())
                    .ok_or(format!("has_source {has}"));
            }
            "ParseVolume" if r["compare"] == "no-error" => {
                return volumes::parse_volume(input.as_str().unwrap()).map(|_| ());
            }
            "ParseVolume" => volumes::parse_volume(input.as_str().unwrap()).map(|v| v.to_json()),
            "ServiceVolumeConfig.String" => {
                Ok(J::String(volumes::volume_string(&Node::from_json(input))))
            }
            "load" => load_service(r, "volumes").map_err(without_position),
            f => Err(format!("unknown function {f}")),
        };
        check_error(r, result)
    });
}

#[test]
fn depends_on() {
    run("depends_on.jsonl", 6, |r| {
        let result = load_service(r, "depends_on").map_err(without_position);
        check_error(r, result)
    });
}

#[test]
fn normalize_model() {
    run("normalize.jsonl", 9, |r| {
        let env = env_of(r, "env");
        let lookup = |k: &str| env.get(k).cloned();
        let mut model = Node::from_json(&r["input"]);
        normalize::normalize(&mut model, &lookup);
        let got = model.to_json();
        (got == r["expected"])
            .then_some(())
            .ok_or(format!("expected {}, got {got}", r["expected"]))
    });
}
