//! Configuration from flags and environment variables (every flag has an
//! environment variable; flags win). `docs/operations.md` has the reference.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

/// Which parts of the server this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Role {
    /// HTTP API, WebSocket events, console, metrics, health.
    Serve,
    /// Saga workers: payments and refunds.
    Saga,
    /// Outbox relay: database to message bus.
    Relay,
    /// On-site print agent: consumes print jobs, drives the printers.
    Agent,
    /// Everything in one process (the embedded default).
    All,
    /// Only the payment provider simulator (for production-shape tests and
    /// load runs, where several saga processes share one provider).
    Simulator,
}

impl Role {
    pub(crate) fn runs(self, part: Role) -> bool {
        (self == Role::All && part != Role::Simulator) || self == part
    }
}

/// When SQLite makes a commit durable (the server database in the embedded
/// default, and every agent's database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SqliteSync {
    /// The write-ahead log is synced on every commit: a committed payment
    /// survives a power failure.
    Full,
    /// Commits are synced in groups, by one background sync of the
    /// write-ahead log, and nothing leaves the process (an HTTP answer, an
    /// event, a message to an agent, a provider call) before the commits it
    /// follows are synced: as safe as `full` for everything anyone outside
    /// has seen, with one sync per group instead of one per commit. The
    /// agents' databases treat it as `full`, since their journal entry must
    /// be on disk before a printer gets the receipt.
    Grouped,
    /// Synced at checkpoints only: a commit survives the process being
    /// killed, but the last ones may be lost on a power failure or an
    /// operating-system crash. About twice the commits per second.
    Normal,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// One JSON object per line (for log shippers).
    Json,
    /// Human-readable text.
    Text,
}

/// The server's configuration.
#[derive(Debug, Clone, Parser)]
#[command(name = "restaurant", version, about = "Counterfoil reference server")]
pub(crate) struct Config {
    /// Which parts to run.
    #[arg(long, env = "RESTAURANT_ROLE", value_enum, default_value = "all")]
    pub(crate) role: Role,

    /// Server database (PostgreSQL or SQLite URL). Default:
    /// `sqlite://<data-dir>/restaurant.sqlite`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,

    /// RabbitMQ URL; absent: an in-process bus (only with `--role all`).
    #[arg(long, env = "AMQP_URL")]
    pub(crate) amqp_url: Option<String>,

    /// Prefix of the RabbitMQ exchanges and queues.
    #[arg(long, env = "AMQP_PREFIX", default_value = "restaurant")]
    pub(crate) amqp_prefix: String,

    /// Redis URL for idempotency keys; absent: the server database.
    #[arg(long, env = "REDIS_URL")]
    pub(crate) redis_url: Option<String>,

    /// Prefix of the idempotency keys in Redis.
    #[arg(long, env = "REDIS_PREFIX", default_value = "restaurant:idem:")]
    pub(crate) redis_prefix: String,

    /// HTTP listen address (port 0 picks a free port and prints it).
    #[arg(long, env = "RESTAURANT_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,

    /// Payment provider base URL; absent: a simulated provider on loopback.
    #[arg(long, env = "RESTAURANT_PROVIDER_URL")]
    pub(crate) provider_url: Option<String>,

    /// Listen address of the simulated provider (when it is used).
    #[arg(
        long,
        env = "RESTAURANT_PROVIDER_SIM_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    pub(crate) provider_sim_listen: SocketAddr,

    /// Printers, as `RESTAURANT/PRINTER=ADDRESS` (ADDRESS is `sim` or
    /// `tcp://HOST:PORT`), comma separated. Absent: `--sim-printers`
    /// simulated printers for each demo restaurant.
    #[arg(long, env = "RESTAURANT_PRINTERS", value_delimiter = ',')]
    pub(crate) printers: Vec<PrinterSpec>,

    /// Simulated printers per demo restaurant when `--printers` is absent.
    #[arg(long, env = "RESTAURANT_SIM_PRINTERS", default_value_t = 2)]
    pub(crate) sim_printers: u32,

    /// The restaurant whose print jobs this agent consumes (`--role agent`).
    #[arg(long, env = "RESTAURANT_AGENT_RESTAURANT")]
    pub(crate) agent_restaurant: Option<String>,

    /// The agent's own database: fiscal journal, inbox and outbox. Default:
    /// `sqlite://<data-dir>/agent.sqlite`.
    #[arg(long, env = "RESTAURANT_AGENT_DATABASE_URL")]
    pub(crate) agent_database_url: Option<String>,

    /// Payment provider call timeout.
    #[arg(long, env = "RESTAURANT_PROVIDER_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub(crate) provider_timeout: Duration,

    /// Operator API key (parked sagas, dead letters, key management).
    #[arg(long, env = "RESTAURANT_OPERATOR_KEY", hide_env_values = true)]
    pub(crate) operator_key: Option<String>,

    /// Create the demo restaurants, printers and well-known API keys.
    #[arg(long, env = "RESTAURANT_DEMO", default_value_t = true, action = ArgAction::Set)]
    pub(crate) demo: bool,

    /// Requests per second allowed per API key (token bucket refill).
    #[arg(long, env = "RESTAURANT_RATE_LIMIT", default_value_t = 200)]
    pub(crate) rate_limit: u32,

    /// Burst size of the per-key token bucket.
    #[arg(long, env = "RESTAURANT_RATE_BURST", default_value_t = 400)]
    pub(crate) rate_burst: u32,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "RESTAURANT_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub(crate) max_body_bytes: usize,

    /// Saga worker concurrency (sagas stepped at once per process).
    #[arg(long, env = "RESTAURANT_SAGA_CONCURRENCY", default_value_t = 32)]
    pub(crate) saga_concurrency: usize,

    /// How long a printer may stay unreachable before a receipt's saga parks.
    #[arg(long, env = "RESTAURANT_FISCAL_DEADLINE", default_value = "24h", value_parser = parse_duration)]
    pub(crate) fiscal_deadline: Duration,

    /// SQLite durability: `grouped` (default), `full` or `normal`; see
    /// docs/operations.md.
    #[arg(
        long,
        env = "RESTAURANT_SQLITE_SYNC",
        value_enum,
        default_value = "grouped"
    )]
    pub(crate) sqlite_sync: SqliteSync,

    /// Connections in each SQLite pool, the server's and the agent's (at
    /// most 8). With 1 (the default), the process's writers queue in the
    /// pool and are woken in turn; with more, those waiting for SQLite's one
    /// write lock sleep in its busy handler, in steps of up to 100 ms.
    #[arg(long, env = "RESTAURANT_SQLITE_CONNECTIONS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    pub(crate) sqlite_connections: u32,

    /// How long a role keeps trying to reach PostgreSQL at start-up (a
    /// database that is restarting) before it exits with the error.
    #[arg(long, env = "RESTAURANT_STARTUP_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub(crate) startup_wait: Duration,

    /// Time allowed to finish in-flight work on SIGTERM/Ctrl-C.
    #[arg(long, env = "RESTAURANT_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub(crate) shutdown_grace: Duration,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "RESTAURANT_LOG", default_value = "info")]
    pub(crate) log: String,

    /// Log format.
    #[arg(
        long,
        env = "RESTAURANT_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub(crate) log_format: LogFormat,

    /// OTLP/HTTP base URL to export trace spans to (protobuf, `POST
    /// <URL>/v1/traces`), e.g. `http://127.0.0.1:4318`; plain `http://`
    /// only. Absent: no spans are exported.
    #[arg(long, env = "RESTAURANT_OTLP_ENDPOINT", value_parser = parse_otlp_endpoint)]
    pub(crate) otlp_endpoint: Option<String>,

    /// `service.name` of the exported spans. Default: `restaurant`.
    #[arg(
        long,
        env = "RESTAURANT_OTLP_SERVICE_NAME",
        default_value = "restaurant"
    )]
    pub(crate) otlp_service_name: String,

    /// Which spans are exported with `--otlp-endpoint` (tracing `EnvFilter`
    /// syntax, independent of `--log`).
    #[arg(long, env = "RESTAURANT_OTLP_FILTER", default_value = "info")]
    pub(crate) otlp_filter: String,

    /// The ISL dialect of the printers (simulated and `tcp://`): `x` (Datecs
    /// FP-700X, DP-25X, ...) or `classic` (FP-2000, FP-800, DP-25, ...).
    #[arg(
        long,
        env = "RESTAURANT_PRINTER_DIALECT",
        value_enum,
        default_value = "x"
    )]
    pub(crate) printer_dialect: PrinterDialect,

    /// Directory for the default SQLite files.
    #[arg(long, env = "RESTAURANT_DATA_DIR", default_value = "data")]
    pub(crate) data_dir: PathBuf,
}

/// The ISL dialect a printer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PrinterDialect {
    /// Datecs X protocol.
    X,
    /// The classic Datecs ISL protocol.
    Classic,
}

impl PrinterDialect {
    /// The driver's dialect.
    pub(crate) fn fiscal(self) -> counterfoil_fiscal::Dialect {
        match self {
            Self::X => counterfoil_fiscal::Dialect::X,
            Self::Classic => counterfoil_fiscal::Dialect::Classic,
        }
    }
}

/// One configured printer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PrinterSpec {
    pub(crate) restaurant: String,
    pub(crate) id: String,
    pub(crate) address: PrinterAddress,
}

/// Where a printer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PrinterAddress {
    /// A simulated printer inside the agent.
    Simulated,
    /// A device on the restaurant's LAN.
    Tcp(String),
}

impl std::str::FromStr for PrinterSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (who, address) = s
            .split_once('=')
            .ok_or_else(|| format!("printer `{s}`: expected RESTAURANT/PRINTER=ADDRESS"))?;
        let (restaurant, id) = who
            .split_once('/')
            .ok_or_else(|| format!("printer `{s}`: expected RESTAURANT/PRINTER before `=`"))?;
        if !crate::domain::is_valid_id(restaurant) || !crate::domain::is_valid_id(id) {
            return Err(format!("printer `{s}`: ids are 1-64 of [A-Za-z0-9_-]"));
        }
        let address = match address {
            "sim" => PrinterAddress::Simulated,
            a => match a.strip_prefix("tcp://") {
                Some(hostport) if hostport.contains(':') => {
                    PrinterAddress::Tcp(hostport.to_owned())
                }
                _ => {
                    return Err(format!(
                        "printer `{s}`: ADDRESS is `sim` or `tcp://HOST:PORT`"
                    ));
                }
            },
        };
        Ok(PrinterSpec {
            restaurant: restaurant.to_owned(),
            id: id.to_owned(),
            address,
        })
    }
}

/// Checks an OTLP/HTTP base URL: `http://HOST[:PORT][/PATH]` (no TLS is
/// built in; export to a collector or agent nearby). Trailing slashes are
/// dropped.
pub(crate) fn parse_otlp_endpoint(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    let uri: http::Uri = s.parse().map_err(|e| format!("`{s}`: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{s}`: expected http://HOST[:PORT]"));
    }
    if uri.query().is_some() {
        return Err(format!("`{s}`: no query string, please"));
    }
    Ok(s.to_owned())
}

/// Parses `250ms`, `10s`, `5m`, `24h`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a number and a unit"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{s}`: unit is one of ms, s, m, h")),
    }
}

impl Config {
    /// The server database URL.
    pub(crate) fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/restaurant.sqlite", self.data_dir.display()))
    }

    /// The agent's database URL.
    pub(crate) fn agent_database_url(&self) -> String {
        self.agent_database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/agent.sqlite", self.data_dir.display()))
    }

    /// The demo restaurants, created with `--demo`.
    pub(crate) const DEMO_RESTAURANTS: [&'static str; 2] = ["demo-1", "demo-2"];

    /// The printers this deployment knows, explicit or simulated demo ones.
    pub(crate) fn printer_specs(&self) -> Vec<PrinterSpec> {
        if !self.printers.is_empty() {
            return self.printers.clone();
        }
        if !self.demo {
            return Vec::new();
        }
        let mut specs = Vec::new();
        for r in Self::DEMO_RESTAURANTS {
            for n in 1..=self.sim_printers {
                specs.push(PrinterSpec {
                    restaurant: r.to_owned(),
                    id: format!("{r}-p{n}"),
                    address: PrinterAddress::Simulated,
                });
            }
        }
        specs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printer_specs_parse() {
        let p: PrinterSpec = "r1/p1=sim".parse().unwrap();
        assert_eq!(p.address, PrinterAddress::Simulated);
        let p: PrinterSpec = "r1/p2=tcp://10.0.0.5:4999".parse().unwrap();
        assert_eq!(p.address, PrinterAddress::Tcp("10.0.0.5:4999".into()));
        assert!("r1=sim".parse::<PrinterSpec>().is_err());
        assert!("r1/p1=udp://x".parse::<PrinterSpec>().is_err());
        assert!("r 1/p1=sim".parse::<PrinterSpec>().is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn otlp_endpoints_parse() {
        assert_eq!(
            parse_otlp_endpoint("http://127.0.0.1:4318/"),
            Ok("http://127.0.0.1:4318".to_owned())
        );
        assert_eq!(
            parse_otlp_endpoint("http://collector:4318/otlp"),
            Ok("http://collector:4318/otlp".to_owned())
        );
        assert!(parse_otlp_endpoint("https://collector:4318").is_err());
        assert!(parse_otlp_endpoint("collector:4318").is_err());
        assert!(parse_otlp_endpoint("http://").is_err());
        assert!(parse_otlp_endpoint("http://c:4318?x=1").is_err());
    }

    #[test]
    fn defaults_are_the_embedded_shape() {
        let c = Config::parse_from(["restaurant"]);
        assert_eq!(c.role, Role::All);
        if std::env::var_os("DATABASE_URL").is_none() {
            assert_eq!(c.database_url(), "sqlite://data/restaurant.sqlite");
        }
        assert!(c.amqp_url.is_none());
        assert_eq!(c.printer_specs().len(), 4);
    }
}
