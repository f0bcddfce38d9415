//! The command line: `parley serve` and `parley hash-token`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use figment::providers::Serialized;
use serde::Serialize;

use crate::config::LogFormat;

/// Parley: a real-time live-chat gateway for customer support.
#[derive(Debug, Parser)]
#[command(name = "parley", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve visitors, agents and the API. With no flags: 127.0.0.1:8080, SQLite under ./data.
    ///
    /// Settings come from flags, then the config file, then PARLEY_* environment variables
    /// (PARLEY_LIMITS__FRAME_MAX_BYTES=8192 sets limits.frame_max_bytes), then defaults: each
    /// overrides the ones after it. Every setting is in docs/configuration.md.
    Serve(ServeArgs),
    /// Print the SHA-256 of a token, for `token_sha256` and `admin_token_sha256` in the config.
    HashToken(HashTokenArgs),
}

#[derive(Debug, Default, Clone, Args)]
pub struct ServeArgs {
    /// TOML config file [default: ./parley.toml if it exists]
    #[arg(long, env = "PARLEY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory for the SQLite transcripts and the visitor token key [default: ./data]
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,
    /// Store URL [default: sqlite file in the data directory]
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// Redis URL: share presence, routing, limits and delivery with other nodes [default: none,
    /// a single node]
    #[arg(long = "redis", value_name = "URL")]
    pub redis: Option<String>,
    /// Log format [default: text]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,
    /// How long a disconnected agent keeps its chats, e.g. 30s [default: 30s]
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub agent_grace: Option<Duration>,
    /// How long a disconnected visitor's conversation stays open [default: 2m]
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub visitor_grace: Option<Duration>,
    /// Chats an agent holds at once unless configured per agent [default: 3]
    #[arg(long, value_name = "N")]
    pub default_capacity: Option<u32>,
    /// Open connections at most; more get HTTP 503 [default: 18000]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Demo agent and admin with token `demo` [default: on only when nothing is configured and
    /// the address is loopback]
    #[arg(long, value_name = "BOOL")]
    pub demo: Option<bool>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct HashTokenArgs {
    /// The token; read from standard input when absent (keeps it out of shell history)
    pub token: Option<String>,
}

/// Only the flags that were given, nested like the config, so unset flags override nothing.
#[derive(Debug, Default, Serialize)]
struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    database: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<LogFormat>,
    #[serde(skip_serializing_if = "Table::is_empty")]
    routing: Table,
    #[serde(skip_serializing_if = "Table::is_empty")]
    limits: Table,
    #[serde(skip_serializing_if = "Table::is_empty")]
    auth: Table,
    #[serde(skip_serializing_if = "Table::is_empty")]
    redis: Table,
}

type Table = std::collections::BTreeMap<&'static str, figment::value::Value>;

impl ServeArgs {
    /// The given flags as a figment provider, merged last (highest precedence).
    pub fn as_overrides(&self) -> Serialized<impl Serialize> {
        let mut o = Overrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            database: self.database.clone(),
            log_format: self.log_format.map(|f| match f {
                LogFormatArg::Text => LogFormat::Text,
                LogFormatArg::Json => LogFormat::Json,
            }),
            ..Overrides::default()
        };
        let duration =
            |d: Duration| figment::value::Value::from(humantime::format_duration(d).to_string());
        if let Some(d) = self.agent_grace {
            o.routing.insert("agent_grace", duration(d));
        }
        if let Some(d) = self.visitor_grace {
            o.routing.insert("visitor_grace", duration(d));
        }
        if let Some(n) = self.default_capacity {
            o.routing.insert("default_capacity", n.into());
        }
        if let Some(n) = self.max_connections {
            o.limits.insert("max_connections", (n as u64).into());
        }
        if let Some(url) = &self.redis {
            o.redis.insert("url", url.clone().into());
        }
        if let Some(b) = self.demo {
            o.auth.insert("demo", b.into());
        }
        Serialized::defaults(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use figment::providers::Format;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_needs_no_arguments() {
        let cli = Cli::try_parse_from(["parley", "serve"]).unwrap();
        assert!(matches!(cli.command, Command::Serve(_)));
    }

    #[test]
    fn flags_override_only_what_is_given() {
        let cli = Cli::try_parse_from([
            "parley",
            "serve",
            "--agent-grace",
            "5s",
            "--default-capacity",
            "4",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        let config = crate::config::from_figment(
            figment::Figment::from(Serialized::defaults(crate::config::Config::default()))
                .merge(args.as_overrides()),
        )
        .unwrap();
        assert_eq!(config.routing.agent_grace, Duration::from_secs(5));
        assert_eq!(config.routing.default_capacity, 4);
        assert_eq!(config.routing.visitor_grace, Duration::from_secs(120));
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.redis.url, None);
    }

    #[test]
    fn layers_override_in_order_env_then_file_then_flags() {
        // Unique variable names, so no other test sees them.
        std::env::set_var("PARLEY_TEST_LAYERS_LISTEN", "127.0.0.1:1111");
        std::env::set_var("PARLEY_TEST_LAYERS_DATA_DIR", "/from/env");
        std::env::set_var("PARLEY_TEST_LAYERS_ROUTING__DEFAULT_CAPACITY", "7");
        let env = figment::providers::Env::prefixed("PARLEY_TEST_LAYERS_")
            .split("__")
            .lowercase(true);
        let file = figment::providers::Toml::string(
            "listen = \"127.0.0.1:2222\"\ndata_dir = \"/from/file\"\n",
        );
        let flags = ServeArgs {
            listen: Some("127.0.0.1:3333".parse().unwrap()),
            ..ServeArgs::default()
        };
        let c = crate::config::from_figment(
            figment::Figment::from(Serialized::defaults(crate::config::Config::default()))
                .merge(env)
                .merge(file)
                .merge(flags.as_overrides()),
        )
        .unwrap();
        assert_eq!(c.listen.port(), 3333, "flags beat the file");
        assert_eq!(
            c.data_dir,
            std::path::PathBuf::from("/from/file"),
            "the file beats the environment"
        );
        assert_eq!(
            c.routing.default_capacity, 7,
            "the environment beats the defaults"
        );
    }

    #[test]
    fn the_redis_flag_sets_redis_url() {
        let cli =
            Cli::try_parse_from(["parley", "serve", "--redis", "redis://127.0.0.1:7000"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!()
        };
        let config = crate::config::from_figment(
            figment::Figment::from(Serialized::defaults(crate::config::Config::default()))
                .merge(args.as_overrides()),
        )
        .unwrap();
        assert_eq!(config.redis.url.as_deref(), Some("redis://127.0.0.1:7000"));
    }

    #[test]
    fn a_bad_redis_url_names_the_key() {
        let mut config = crate::config::Config::default();
        config.redis.url = Some("http://nope".into());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("redis.url"), "{err}");
    }
}
