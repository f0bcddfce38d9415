//! Keeps `docs/configuration.md` honest: every setting of [`Config`] has a row with its true
//! default, no row names a setting that does not exist, every flag of `parley serve` is listed,
//! and every TOML example is a valid configuration. No server is needed.

use std::collections::BTreeMap;

use clap::CommandFactory;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use parley::cli::Cli;
use parley::config::{
    self, AgentConfig, CategoryConfig, Config, Hours, HoursConfig, TeamConfig, WebhookConfig,
};
use serde_json::Value;

const DOC: &str = "docs/configuration.md";

fn doc() -> String {
    std::fs::read_to_string(DOC).expect("docs/configuration.md exists")
}

/// Table rows whose first cell is a setting path in backticks: path -> the second cell.
fn documented_settings(doc: &str) -> BTreeMap<String, String> {
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // "| `a.b` | default | what |" splits into ["", "`a.b`", "default", "what", ""].
            let path = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let is_setting = !path.starts_with('-') && !path.contains(' ') && !path.contains('=');
            let default = cells.get(2)?;
            is_setting.then(|| (path.to_string(), default.to_string()))
        })
        .collect()
}

/// Leaf settings of the defaults, as dotted paths; lists of values are leaves.
fn leaves(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), value.clone());
        }
    }
}

fn default_settings() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    leaves(
        "",
        &serde_json::to_value(Config::default()).unwrap(),
        &mut out,
    );
    // `[[agents]]` and `[[webhooks]]` are lists of tables with no default entries: document
    // their fields instead.
    let agent = AgentConfig {
        id: "a".into(),
        name: "A".into(),
        token_sha256: "0".repeat(64),
        capacity: None,
        teams: Vec::new(),
    };
    let webhook = WebhookConfig {
        url: "https://crm.example.com/hook".into(),
        secret: "0".repeat(16),
        events: Vec::new(),
    };
    for (list, entry) in [
        ("agents", serde_json::to_value(agent).unwrap()),
        ("webhooks", serde_json::to_value(webhook).unwrap()),
    ] {
        out.remove(list);
        if let Value::Object(fields) = entry {
            for field in fields.keys() {
                out.insert(format!("{list}[].{field}"), Value::Null);
            }
        }
    }
    // `[[teams]]` and `[categories.<name>]` likewise: their fields, with no default entries.
    out.remove("teams");
    let team = TeamConfig {
        id: "t".into(),
        name: "T".into(),
        hours: Some(
            Hours::parse(&HoursConfig {
                timezone: "UTC".into(),
                days: vec!["mon".into()],
                open: "09:00".into(),
                close: "17:00".into(),
            })
            .unwrap(),
        ),
    };
    let mut team_fields = BTreeMap::new();
    leaves(
        "teams[]",
        &serde_json::to_value(team).unwrap(),
        &mut team_fields,
    );
    out.extend(team_fields.into_keys().map(|k| (k, Value::Null)));
    let category = CategoryConfig {
        team: Some("t".into()),
        first_response_target: Some(std::time::Duration::from_secs(1)),
        label: Some("L".into()),
        // One entry stands for them all: documented as `categories.<name>.labels.<lang>`.
        labels: BTreeMap::from([("<lang>".into(), "L".into())]),
        short_label: Some("S".into()),
    };
    let mut category_fields = BTreeMap::new();
    leaves(
        "categories.<name>",
        &serde_json::to_value(category).unwrap(),
        &mut category_fields,
    );
    out.extend(category_fields.into_keys().map(|k| (k, Value::Null)));
    out
}

/// `"24h"` and `"1day"` are the same default, written two ways.
fn same_duration(a: &Value, b: &Value) -> bool {
    match (a.as_str(), b.as_str()) {
        (Some(a), Some(b)) => matches!(
            (humantime::parse_duration(a), humantime::parse_duration(b)),
            (Ok(x), Ok(y)) if x == y
        ),
        _ => false,
    }
}

#[test]
fn every_setting_is_documented_with_its_default() {
    let documented = documented_settings(&doc());
    let mut problems = Vec::new();
    for (path, default) in default_settings() {
        let Some(cell) = documented.get(&path) else {
            problems.push(format!("`{path}` has no row"));
            continue;
        };
        if default.is_null() && (path.contains("[]") || path.contains('<')) {
            continue;
        }
        let shown = if cell == "none" {
            Value::Null
        } else {
            // TOML strings, numbers, booleans and lists of strings are also JSON.
            let inner = cell.trim_matches('`');
            match serde_json::from_str::<Value>(inner) {
                Ok(v) => v,
                Err(_) => {
                    problems.push(format!("`{path}`: default cell {cell} is not a value"));
                    continue;
                }
            }
        };
        if shown != default && !same_duration(&shown, &default) {
            problems.push(format!(
                "`{path}`: documented default {shown}, actual {default}"
            ));
        }
    }
    assert!(problems.is_empty(), "{DOC}:\n{}", problems.join("\n"));
}

#[test]
fn no_row_names_a_setting_that_does_not_exist() {
    let actual = default_settings();
    let stale: Vec<String> = documented_settings(&doc())
        .into_keys()
        .filter(|path| !actual.contains_key(path))
        .collect();
    assert!(
        stale.is_empty(),
        "{DOC} documents unknown settings: {stale:?}"
    );
}

#[test]
fn every_serve_flag_is_documented() {
    let doc = doc();
    let cli = Cli::command();
    let serve = cli
        .get_subcommands()
        .find(|c| c.get_name() == "serve")
        .expect("a serve subcommand");
    let missing: Vec<String> = serve
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| !["help", "version"].contains(long))
        .filter(|long| !doc.contains(&format!("| `--{long}")))
        .map(|long| format!("--{long}"))
        .collect();
    assert!(missing.is_empty(), "{DOC} lacks the flags {missing:?}");
}

#[test]
fn every_toml_example_is_a_valid_configuration() {
    let doc = doc();
    let mut examples = 0;
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + "```toml\n".len()..];
        let end = body.find("```").expect("a closed toml block");
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(&body[..end]));
        if let Err(err) = config::from_figment(figment) {
            panic!(
                "a TOML example in {DOC} is refused: {err}\n{}",
                &body[..end]
            );
        }
        examples += 1;
        rest = &body[end..];
    }
    assert!(examples >= 1, "{DOC} has no TOML example");
}
