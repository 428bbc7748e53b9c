//! `sluice graph`: every flow of the flows folder drawn as one dependency map: its trigger,
//! steps (named ones by name), route arms and sinks, and the edges between flows (channels,
//! `call`, a file sink writing into another flow's watched folder, an `http` sink or
//! `enrich` calling another flow's route on this machine). Read from the flow files alone:
//! nothing is started or connected.

use serde_json::{Value, json};
use sluice_flow::model::{FlowStep, RouteArm, SinkConfig, StepConfig, TriggerConfig};
use sluice_flow::paths::normalize;
use sluice_flow::secrets::redacted;
use sluice_flow::{LoadedFlow, Spanned};
use std::path::PathBuf;

/// A node: a trigger, a step, a route arm or a sink of one flow.
pub struct Node {
    /// Unique in the graph: `<flow>/trigger`, `<flow>/steps[2]`, `<flow>/sink/<name>`.
    pub id: String,
    /// Its flow.
    pub flow: String,
    /// `trigger`, `step`, `arm` or `sink`.
    pub role: &'static str,
    /// The trigger, step or sink kind.
    pub kind: &'static str,
    /// What it shows.
    pub label: String,
}

/// An edge, within a flow (`next`, `arm`, `deliver`) or between flows (`channel`, `call`,
/// `file`, `http`).
pub struct Edge {
    /// From node id.
    pub from: String,
    /// To node id.
    pub to: String,
    /// What connects them.
    pub kind: &'static str,
    /// A label (a route arm's condition, a channel's name).
    pub label: Option<String>,
}

/// One flow's header: its name, file, owner and tags.
pub struct FlowHead {
    name: String,
    file: PathBuf,
    owner: Option<String>,
    tags: Vec<String>,
    description: Option<String>,
}

/// The whole map.
#[derive(Default)]
pub struct Graph {
    flows: Vec<FlowHead>,
    nodes: Vec<Node>,
    edges: Vec<Edge>,
}

/// Where other flows can be reached: what each trigger listens on.
#[derive(Default)]
struct Entrances {
    channels: Vec<(String, String)>,
    folders: Vec<(PathBuf, String)>,
    routes: Vec<(&'static str, Vec<String>, String)>,
    names: Vec<String>,
}

/// What a flow reaches out to, resolved against [`Entrances`] once every flow is read.
enum Exit {
    Channel(String),
    Folder(PathBuf),
    Http(&'static str, String),
    Call(String),
}

/// Builds the graph of `flows`.
pub fn graph(flows: &[LoadedFlow]) -> Graph {
    let mut graph = Graph::default();
    let mut entrances = Entrances::default();
    let mut exits: Vec<(String, Exit)> = Vec::new();
    for flow in flows {
        let name = flow.name.clone();
        let file = &flow.file;
        graph.flows.push(FlowHead {
            name: name.clone(),
            file: flow.path.clone(),
            owner: file.owner.as_ref().map(|o| redacted(o)),
            tags: file.tags.iter().map(|t| redacted(t)).collect(),
            description: file.description.as_ref().map(|d| redacted(d)),
        });
        let trigger = format!("{name}/trigger");
        let (kind, label) = trigger_label(&file.trigger.value);
        graph.nodes.push(Node {
            id: trigger.clone(),
            flow: name.clone(),
            role: "trigger",
            kind,
            label,
        });
        entrances.names.push(name.clone());
        match &file.trigger.value {
            TriggerConfig::Channel(c) => entrances
                .channels
                .push((c.name.value.to_string(), trigger.clone())),
            TriggerConfig::File(f) => entrances.folders.push((
                normalize(std::path::Path::new(&*f.path.value)),
                trigger.clone(),
            )),
            TriggerConfig::Http(h) => {
                entrances
                    .routes
                    .push((h.method.as_str(), segments(&h.path.value), trigger.clone()))
            }
            _ => {}
        }
        let sinks_of = |sink: &str| format!("{name}/sink/{sink}");
        for (sink, config) in &file.sinks {
            let id = sinks_of(sink);
            graph.nodes.push(Node {
                id: id.clone(),
                flow: name.clone(),
                role: "sink",
                kind: sink_kind(config),
                label: format!("{sink} ({})", sink_label(config)),
            });
            if let Some(exit) = sink_exit(&config.value) {
                exits.push((id, exit));
            }
        }
        let mut walker = Walker {
            flow: &name,
            graph: &mut graph,
            exits: &mut exits,
        };
        walker.steps(&file.steps, "steps", vec![trigger]);
    }
    for (from, exit) in exits {
        let (targets, kind, label): (Vec<&String>, _, _) = match &exit {
            Exit::Channel(channel) => (
                entrances
                    .channels
                    .iter()
                    .filter(|(c, _)| c == channel)
                    .map(|(_, t)| t)
                    .collect(),
                "channel",
                Some(format!("channel {channel}")),
            ),
            Exit::Folder(folder) => (
                entrances
                    .folders
                    .iter()
                    .filter(|(f, _)| f == folder)
                    .map(|(_, t)| t)
                    .collect(),
                "file",
                Some(format!("files {}", folder.display())),
            ),
            Exit::Http(method, url) => {
                let path = segments(url);
                (
                    entrances
                        .routes
                        .iter()
                        .filter(|(m, route, _)| m == method && route_matches(route, &path))
                        .map(|(_, _, t)| t)
                        .collect(),
                    "http",
                    Some(format!("{method} {}", path_of(url))),
                )
            }
            Exit::Call(flow) => (
                entrances.names.iter().filter(|n| *n == flow).collect(),
                "call",
                Some("call".to_owned()),
            ),
        };
        for target in targets {
            let to = if matches!(exit, Exit::Call(_)) {
                format!("{target}/trigger")
            } else {
                target.clone()
            };
            graph.edges.push(Edge {
                from: from.clone(),
                to,
                kind,
                label: label.clone(),
            });
        }
    }
    graph
}

/// Walks a step list, adding a node per step and the edges from `before` into it.
struct Walker<'a> {
    flow: &'a str,
    graph: &'a mut Graph,
    exits: &'a mut Vec<(String, Exit)>,
}

impl Walker<'_> {
    fn edge(&mut self, from: &str, to: &str, kind: &'static str, label: Option<String>) {
        self.graph.edges.push(Edge {
            from: from.to_owned(),
            to: to.to_owned(),
            kind,
            label,
        });
    }

    fn sink(&self, name: &str) -> String {
        format!("{}/sink/{name}", self.flow)
    }

    /// Adds `steps`; returns the nodes the message leaves from at the end.
    fn steps(
        &mut self,
        steps: &[Spanned<FlowStep>],
        at: &str,
        mut before: Vec<String>,
    ) -> Vec<String> {
        for (i, step) in steps.iter().enumerate() {
            let position = format!("{at}[{i}]");
            let id = format!("{}/{position}", self.flow);
            let step = &step.value;
            let kind = step.kind();
            let label = match &step.name {
                Some(name) => format!("{} ({kind})", name.value),
                None => kind.to_owned(),
            };
            self.graph.nodes.push(Node {
                id: id.clone(),
                flow: self.flow.to_owned(),
                role: "step",
                kind,
                label,
            });
            for from in &before {
                self.edge(from, &id, "next", None);
            }
            before = vec![id.clone()];
            match &step.config {
                StepConfig::To(targets) => {
                    for sink in &targets.value.0 {
                        self.edge(&id, &self.sink(sink), "deliver", None);
                    }
                }
                StepConfig::Wiretap(sink) => {
                    self.edge(
                        &id,
                        &self.sink(&sink.value),
                        "deliver",
                        Some("wiretap".into()),
                    );
                }
                StepConfig::Route(arms) => {
                    let mut ends = vec![id.clone()];
                    for (a, arm) in arms.iter().enumerate() {
                        ends.extend(self.arm(&id, &position, a, &arm.value));
                    }
                    before = ends;
                }
                StepConfig::Try(inner) | StepConfig::Catch(inner) => {
                    let inner_at = format!("{position}.{kind}");
                    before = self.steps(inner, &inner_at, vec![id.clone()]);
                }
                StepConfig::Call(flow) => {
                    self.exits
                        .push((id.clone(), Exit::Call(flow.value.to_string())));
                }
                StepConfig::Enrich(enrich) => {
                    self.exits.push((
                        id.clone(),
                        Exit::Http(enrich.method.as_str(), enrich.url.value.to_string()),
                    ));
                }
                _ => {}
            }
        }
        before
    }

    /// A route arm: a node with its condition, its sinks or its steps.
    fn arm(&mut self, route: &str, position: &str, a: usize, arm: &RouteArm) -> Vec<String> {
        let id = format!("{route}/arm[{a}]");
        let label = match (&arm.when, &arm.otherwise) {
            (Some(when), _) => format!("when {}", redacted(&when.value)),
            (None, Some(_)) => "else".to_owned(),
            _ => "arm".to_owned(),
        };
        self.graph.nodes.push(Node {
            id: id.clone(),
            flow: self.flow.to_owned(),
            role: "arm",
            kind: "arm",
            label: label.clone(),
        });
        self.edge(route, &id, "arm", Some(label));
        for targets in [&arm.to, &arm.otherwise].into_iter().flatten() {
            for sink in &targets.value.0 {
                self.edge(&id, &self.sink(sink), "deliver", None);
            }
        }
        match &arm.steps {
            Some(steps) => self.steps(steps, &format!("{position}.route[{a}].steps"), vec![id]),
            None => Vec::new(),
        }
    }
}

fn trigger_label(trigger: &TriggerConfig) -> (&'static str, String) {
    let (kind, what) = match trigger {
        TriggerConfig::File(f) => ("file", f.path.value.to_string()),
        TriggerConfig::Http(h) => ("http", format!("{} {}", h.method.as_str(), h.path.value)),
        TriggerConfig::Channel(c) => ("channel", c.name.value.to_string()),
        TriggerConfig::Schedule(_) => ("schedule", String::new()),
        TriggerConfig::Nats(_) => ("nats", String::new()),
        TriggerConfig::Amqp(_) => ("amqp", String::new()),
        TriggerConfig::Mqtt(_) => ("mqtt", String::new()),
        TriggerConfig::Redis(_) => ("redis", String::new()),
        TriggerConfig::Postgres(_) => ("postgres", String::new()),
        TriggerConfig::Mysql(_) => ("mysql", String::new()),
        TriggerConfig::Kafka(_) => ("kafka", String::new()),
        // The folder only: the URL's user is not for a picture.
        TriggerConfig::Sftp(_) => ("sftp", String::new()),
    };
    let label = if what.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} {}", redacted(&what))
    };
    (kind, label)
}

/// A sink's YAML key, as its connector declares it (`SinkComponent::KEY`).
fn sink_kind(sink: &Spanned<SinkConfig>) -> &'static str {
    use sluice_engine::Connectors as _;
    static CONNECTORS: std::sync::LazyLock<sluice_connectors::StandardConnectors> =
        std::sync::LazyLock::new(sluice_connectors::StandardConnectors::default);
    CONNECTORS.sink_info(sink).kind
}

/// A sink's kind and, where it says where it goes without a secret, that.
fn sink_label(spanned: &Spanned<SinkConfig>) -> String {
    let kind = sink_kind(spanned);
    match &spanned.value {
        SinkConfig::File(f) => format!("{kind} {}", redacted(&f.path.value)),
        SinkConfig::Channel(c) => format!("{kind} {}", c.name.value),
        // The path only: a URL's host, user or query may be a secret.
        SinkConfig::Http(h) => format!(
            "{kind} {} {}",
            h.method.as_str(),
            redacted(&path_of(&h.url.value))
        ),
        _ => kind.to_owned(),
    }
}

fn sink_exit(sink: &SinkConfig) -> Option<Exit> {
    match sink {
        SinkConfig::Channel(c) => Some(Exit::Channel(c.name.value.to_string())),
        SinkConfig::File(f) if !f.path.value.contains("{{") => Some(Exit::Folder(normalize(
            std::path::Path::new(&*f.path.value),
        ))),
        SinkConfig::Http(h) => Some(Exit::Http(h.method.as_str(), h.url.value.to_string())),
        _ => None,
    }
}

/// The path of a URL on this machine (`localhost`, a loopback address), else `None`.
fn local_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    let host = match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => &host[..i],
        _ => host,
    };
    let local = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    local.then_some(path)
}

/// A URL's path without its query (`/` when it has none), or the route itself.
fn path_of(url: &str) -> String {
    let path = if url.starts_with('/') {
        url
    } else {
        match url.find("://") {
            Some(i) => {
                let rest = &url[i + 3..];
                rest.find('/').map_or("/", |p| &rest[p..])
            }
            None => url,
        }
    };
    path.split(['?', '#']).next().unwrap_or("/").to_owned()
}

/// A route or local URL split into path segments; a URL that is not on this machine has
/// none (it matches no route).
fn segments(route_or_url: &str) -> Vec<String> {
    let path = if route_or_url.starts_with('/') {
        Some(route_or_url)
    } else {
        local_path(route_or_url)
    };
    let Some(path) = path else {
        return vec!["\u{0}not-local".to_owned()];
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Whether a URL's path (its `{{ template }}` parts matching anything) fits a route (its
/// `{param}` parts matching any one segment).
fn route_matches(route: &[String], path: &[String]) -> bool {
    route.len() == path.len()
        && route
            .iter()
            .zip(path)
            .all(|(r, p)| (r.starts_with('{') && r.ends_with('}')) || p.contains("{{") || r == p)
}

impl Graph {
    /// The graph as JSON: flows (name, file, owner, tags), nodes and edges.
    pub fn json(&self) -> Value {
        json!({
            "flows": self.flows.iter().map(|f| json!({
                "name": f.name,
                "file": f.file.display().to_string(),
                "owner": f.owner,
                "tags": f.tags,
                "description": f.description,
            })).collect::<Vec<_>>(),
            "nodes": self.nodes.iter().map(|n| json!({
                "id": n.id, "flow": n.flow, "role": n.role, "kind": n.kind, "label": n.label,
            })).collect::<Vec<_>>(),
            "edges": self.edges.iter().map(|e| json!({
                "from": e.from, "to": e.to, "kind": e.kind, "label": e.label,
            })).collect::<Vec<_>>(),
        })
    }

    /// A flow's title: its name, owner and tags.
    fn title(flow: &FlowHead) -> String {
        let mut title = flow.name.clone();
        if let Some(owner) = &flow.owner {
            title.push_str(&format!(" · owner: {owner}"));
        }
        if !flow.tags.is_empty() {
            title.push_str(&format!(" · tags: {}", flow.tags.join(", ")));
        }
        title
    }

    fn short_ids(&self) -> std::collections::HashMap<&str, String> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), format!("n{i}")))
            .collect()
    }

    fn between_flows(edge: &Edge) -> bool {
        matches!(edge.kind, "channel" | "call" | "file" | "http")
    }

    /// Mermaid `flowchart LR`, a subgraph per flow.
    pub fn mermaid(&self) -> String {
        let ids = self.short_ids();
        let text = |s: &str| s.replace('"', "#quot;");
        let mut out = String::from("flowchart LR\n");
        for (f, flow) in self.flows.iter().enumerate() {
            out.push_str(&format!(
                "  subgraph f{f}[\"{}\"]\n",
                text(&Self::title(flow))
            ));
            for node in self.nodes.iter().filter(|n| n.flow == flow.name) {
                let label = text(&node.label);
                let shape = match node.role {
                    "trigger" => format!("([\"{label}\"])"),
                    "sink" => format!("[(\"{label}\")]"),
                    "arm" => format!("{{\"{label}\"}}"),
                    _ => format!("[\"{label}\"]"),
                };
                out.push_str(&format!("    {}{shape}\n", ids[node.id.as_str()]));
            }
            out.push_str("  end\n");
        }
        for edge in &self.edges {
            let (Some(from), Some(to)) = (ids.get(edge.from.as_str()), ids.get(edge.to.as_str()))
            else {
                continue;
            };
            let arrow = if Self::between_flows(edge) {
                "-.->"
            } else {
                "-->"
            };
            match &edge.label {
                Some(label) => {
                    out.push_str(&format!("  {from} {arrow}|\"{}\"| {to}\n", text(label)))
                }
                None => out.push_str(&format!("  {from} {arrow} {to}\n")),
            }
        }
        out
    }

    /// Graphviz DOT, a cluster per flow.
    pub fn dot(&self) -> String {
        let ids = self.short_ids();
        let text = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out =
            String::from("digraph sluice {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n");
        for (f, flow) in self.flows.iter().enumerate() {
            out.push_str(&format!(
                "  subgraph cluster_{f} {{\n    label=\"{}\";\n",
                text(&Self::title(flow))
            ));
            for node in self.nodes.iter().filter(|n| n.flow == flow.name) {
                let shape = match node.role {
                    "trigger" => "oval",
                    "sink" => "cylinder",
                    "arm" => "diamond",
                    _ => "box",
                };
                out.push_str(&format!(
                    "    {} [label=\"{}\", shape={shape}];\n",
                    ids[node.id.as_str()],
                    text(&node.label)
                ));
            }
            out.push_str("  }\n");
        }
        for edge in &self.edges {
            let (Some(from), Some(to)) = (ids.get(edge.from.as_str()), ids.get(edge.to.as_str()))
            else {
                continue;
            };
            let mut attributes = Vec::new();
            if Self::between_flows(edge) {
                attributes.push("style=dashed".to_owned());
            }
            if let Some(label) = &edge.label {
                attributes.push(format!("label=\"{}\"", text(label)));
            }
            if attributes.is_empty() {
                out.push_str(&format!("  {from} -> {to};\n"));
            } else {
                out.push_str(&format!("  {from} -> {to} [{}];\n", attributes.join(", ")));
            }
        }
        out.push_str("}\n");
        out
    }
}
