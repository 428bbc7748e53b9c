//! Command-line arguments.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// sluice — declarative integration flows: a trigger, steps and sinks per YAML file.
#[derive(Debug, Parser)]
#[command(name = "sluice", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "SLUICE_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where flows, contracts and scripts live.
#[derive(Debug, Clone, clap::Args)]
pub struct Folders {
    /// Folder of flow files (`*.yaml`).
    #[arg(long, default_value = "flows")]
    pub flows: PathBuf,
    /// Folder of JSON Schema contracts (`order.v1` → `<schemas>/order.v1.json`).
    #[arg(long, default_value = "schemas")]
    pub schemas: PathBuf,
    /// Folder of Rhai scripts.
    #[arg(long, default_value = "scripts")]
    pub scripts: PathBuf,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every flow in the flows folder, hot-reloading on changes.
    Run {
        #[command(flatten)]
        folders: Folders,
        /// How long stopping flows may take to finish in-flight messages.
        #[arg(long, default_value = "30s", value_parser = humantime_duration)]
        shutdown_grace: std::time::Duration,
        /// The HTTP listener shared by every `http` trigger.
        #[arg(long, env = "SLUICE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: String,
        /// Connections the HTTP listener serves at once (overrides `http.max_connections`
        /// in sluice.yaml; default 1024). Further connections wait in the accept queue.
        #[arg(long, env = "SLUICE_HTTP_MAX_CONNECTIONS", value_parser = positive_count)]
        http_max_connections: Option<usize>,
        /// The admin server (health, metrics, flows API); `off` disables it.
        #[arg(long, env = "SLUICE_ADMIN", default_value = "127.0.0.1:9850")]
        admin: String,
        /// A bearer token the admin API requires (every endpoint but /healthz and /readyz).
        #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// A host name the admin server answers to, besides its own address (and `localhost`
        /// when bound to loopback); repeatable. Requests with any other `Host` get 421.
        #[arg(
            long = "admin-host",
            value_name = "NAME",
            env = "SLUICE_ADMIN_HOSTS",
            value_delimiter = ',',
            value_parser = admin_host_name
        )]
        admin_hosts: Vec<String>,
    },
    /// Check flows: parse, compile every expression, script and contract. Exit 1 on any error.
    Check {
        #[command(flatten)]
        folders: Folders,
        /// Flows to check, each a file or the name of a flow in the flows folder (default:
        /// every flow there). `call`s resolve against the flows folder either way.
        files: Vec<String>,
    },
    /// Run the `tests:` of flows. Exit 1 when a test fails or a flow is invalid.
    Test {
        #[command(flatten)]
        folders: Folders,
        /// Flows to test, each a file or the name of a flow in the flows folder (default:
        /// every flow there).
        files: Vec<String>,
    },
    /// Run one input through a flow and print the result; nothing is written anywhere and
    /// nothing outside is called (`enrich` and `call` steps and sinks can be mocked).
    Exec {
        #[command(flatten)]
        folders: Folders,
        /// The flow: a file, or the name of a flow in the flows folder.
        flow: String,
        /// The input file, or `-` for standard input; decoded with the trigger's format.
        #[arg(long, short)]
        input: PathBuf,
        #[command(flatten)]
        options: ExecOptions,
    },
    /// Print the JSON Schema of the flow format.
    Schema,
    /// Print the OpenAPI 3.1 document of every flow with an `http` trigger.
    Openapi {
        #[command(flatten)]
        folders: Folders,
        /// Flows to describe, each a file or the name of a flow in the flows folder (default:
        /// every flow there).
        files: Vec<String>,
        /// A base URL of the listener for the document's `servers` (repeatable), e.g.
        /// `--server https://api.example.com`.
        #[arg(long = "server", value_name = "URL")]
        servers: Vec<String>,
    },
    /// Draw every flow and the edges between them (channels, `call`, files, HTTP routes).
    Graph {
        #[command(flatten)]
        folders: Folders,
        /// The output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
    /// Stream the messages passing a flow (or one step) of a running `sluice run`, through
    /// its admin server, until Ctrl-C or `--limit`.
    Tap {
        #[command(flatten)]
        remote: Remote,
        /// The flow.
        flow: String,
        /// Only the messages leaving this step (its `name:`, or its label in `/api/flows`,
        /// e.g. `steps[1] (script)`); `input` is the message as it entered the steps.
        #[arg(long)]
        step: Option<String>,
        /// Show one message in N (the same messages at every step).
        #[arg(long, default_value_t = 1, value_parser = positive_u64)]
        sample: u64,
        /// Stop after N samples.
        #[arg(long, value_parser = positive_u64)]
        limit: Option<u64>,
    },
    /// Dead letters of a running `sluice run`, through its admin server: list, show,
    /// replay, purge.
    Dlq {
        #[command(flatten)]
        remote: Remote,
        #[command(subcommand)]
        what: Dlq,
    },
    /// Write something new from a template: `sluice new flow NAME --trigger http`.
    New {
        #[command(subcommand)]
        what: New,
    },
}

/// What `sluice graph` prints.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum GraphFormat {
    /// A Mermaid flowchart (renders in GitHub and GitLab Markdown).
    Mermaid,
    /// Graphviz DOT (`sluice graph --format dot | dot -Tsvg > flows.svg`).
    Dot,
    /// Flows, nodes and edges as JSON.
    Json,
}

/// How a command reaches the admin server of a running `sluice run`.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// The admin server: `HOST:PORT` or a base URL.
    #[arg(long, env = "SLUICE_ADMIN", default_value = "127.0.0.1:9850")]
    pub admin: String,
    /// The admin token, when `sluice run` has one.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Print the admin API's JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What `sluice dlq` does.
#[derive(Debug, Subcommand)]
pub enum Dlq {
    /// List the dead letters (of one flow, when named).
    List {
        /// Only this flow's.
        flow: Option<String>,
    },
    /// Show one dead letter whole: the message, its metadata, the error, past replays.
    Show {
        /// The entry's id (`sluice dlq list` shows them).
        id: String,
    },
    /// Run dead letters again through their flow's current version. A success moves the
    /// entry to `replayed/`; a failure keeps it, with the new error appended.
    Replay {
        /// The entries' ids.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every dead letter (of `--flow`, when given).
        #[arg(long)]
        all: bool,
        /// With `--all`: only this flow's.
        #[arg(long, requires = "all")]
        flow: Option<String>,
        /// Edit the message in `$VISUAL` / `$EDITOR` before it is replayed (one id).
        #[arg(long, conflicts_with = "all")]
        edit: bool,
    },
    /// Delete dead letters (the `replayed/` area stays).
    Purge {
        /// The entries' ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// What `sluice new` writes.
#[derive(Debug, Subcommand)]
pub enum New {
    /// A flow file with a contract stub and tests that pass (`sluice test` is green on it).
    Flow {
        #[command(flatten)]
        folders: Folders,
        /// The flow's name: the file `<flows>/NAME.yaml` and the contract `NAME.v1`.
        name: String,
        /// The trigger the flow starts with.
        #[arg(long, value_enum)]
        trigger: NewTrigger,
    },
}

/// The triggers `sluice new flow` can write (every trigger kind; a test keeps them in step).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum NewTrigger {
    /// An HTTP route on the shared listener.
    Http,
    /// Files dropped into a folder.
    File,
    /// A NATS JetStream durable consumer.
    Nats,
    /// A RabbitMQ queue.
    Amqp,
    /// MQTT topics.
    Mqtt,
    /// A Redis stream consumer group.
    Redis,
    /// A PostgreSQL outbox table.
    Postgres,
    /// A MariaDB/MySQL outbox table.
    Mysql,
    /// Kafka topics, through a consumer group.
    Kafka,
    /// Files in a folder on an SSH server.
    Sftp,
    /// A clock.
    Schedule,
    /// A flow-to-flow channel.
    Channel,
}

impl NewTrigger {
    /// The trigger's key in a flow file.
    pub fn key(self) -> &'static str {
        match self {
            NewTrigger::Http => "http",
            NewTrigger::File => "file",
            NewTrigger::Nats => "nats",
            NewTrigger::Amqp => "amqp",
            NewTrigger::Mqtt => "mqtt",
            NewTrigger::Redis => "redis",
            NewTrigger::Postgres => "postgres",
            NewTrigger::Mysql => "mysql",
            NewTrigger::Kafka => "kafka",
            NewTrigger::Sftp => "sftp",
            NewTrigger::Schedule => "schedule",
            NewTrigger::Channel => "channel",
        }
    }
}

impl Command {
    /// Commands whose output is the point keep the log to warnings.
    pub fn is_quiet(&self) -> bool {
        !matches!(self, Command::Run { .. })
    }
}

fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "`{text}` is not `key=value`; e.g. --meta http.path.sku=KETTLE-1"
        )),
    }
}

fn humantime_duration(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<humantime::Duration>()
        .map(Into::into)
        .map_err(|e| format!("`{text}` is not a duration ({e}); e.g. 30s"))
}

fn positive_u64(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{text}` is not a count of at least 1; e.g. 10")),
    }
}

fn positive_count(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{text}` is not a count of at least 1; e.g. 1024")),
    }
}

/// A name for `--admin-host`: a bare host name or IP address, compared case-insensitively with
/// the host part of a request's `Host` header (ports are not compared).
fn admin_host_name(text: &str) -> Result<String, String> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if valid {
        Ok(name)
    } else {
        Err(format!(
            "`{text}` is not a host name; give the bare name the admin server is reached by, \
             without scheme, port or path, e.g. --admin-host sluice.internal"
        ))
    }
}

/// How `sluice exec` runs its message: what it shows, the metadata it is given, and what
/// stands in for the world.
#[derive(Args, Debug)]
pub struct ExecOptions {
    /// Show every step: the payload and metadata after it, the route arm taken, what
    /// `log` steps wrote, and the error with the payload as it was.
    #[arg(long)]
    pub trace: bool,
    /// Metadata for the message, as `key=value` (repeatable), e.g.
    /// `--meta mqtt.topic=sensors/s-1/temperature`.
    #[arg(long = "meta", value_name = "KEY=VALUE", value_parser = key_value)]
    pub meta: Vec<(String, String)>,
    /// Metadata from a JSON object file (`{"mqtt.topic": "…"}`; values that are not
    /// strings are given as JSON text). `--meta` entries win.
    #[arg(long, value_name = "FILE")]
    pub meta_file: Option<PathBuf>,
    /// For an `http` flow: the request path (with an optional `?query`), matched
    /// against the route, so that `http.path.<param>`, `http.query.<name>`,
    /// `http.path` and `http.method` are set as the trigger would set them.
    #[arg(long, value_name = "PATH")]
    pub http_path: Option<String>,
    /// Mocks for `enrich` and `call` steps and sinks: a YAML or JSON file shaped like a
    /// test case's `mocks:` (`{<step or sink>: {body, status, delay, error}}`).
    #[arg(long, value_name = "FILE")]
    pub mocks: Option<PathBuf>,
    /// Let `enrich` steps without a mock call their real endpoints (sinks are still
    /// never written).
    #[arg(long)]
    pub live: bool,
}
