//! Dead letters you can act on: list, show, replay and purge the entries of `file` dead
//! letters (docs/http-and-operations.md, "Dead letters").
//!
//! An entry is one file `{message, meta, error}` in a flow's dead-letter folder; its id is
//! the file name without `.json` (the message id, with the default name template). A replay
//! runs the original message with its original metadata (plus `replayed_from` and
//! `replay_count`) through the running version of its flow. On success the entry moves to
//! `<folder>/replayed/` with the outcome added; on failure it stays, with the new error
//! appended to its `replays`.

use super::{Admin, trust};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use sluice_engine::{Meta, Outcome};
use std::collections::HashMap;
use std::path::PathBuf;

/// Where replayed entries go, inside the dead-letter folder.
pub const REPLAYED: &str = "replayed";
/// The bytes of a dead-letter entry read at most; a larger file is not a sluice entry.
const ENTRY_LIMIT: u64 = 64 * 1024 * 1024;

/// One entry found on disk.
#[derive(Clone)]
struct Found {
    id: String,
    flow: String,
    file: PathBuf,
}

/// The entries of every flow's dead-letter folder (of `flow` only, when given), oldest
/// first by file time then id.
fn scan(folders: &[(String, PathBuf)], flow: Option<&str>) -> Vec<Found> {
    let mut found: Vec<(std::time::SystemTime, Found)> = Vec::new();
    for (name, folder) in folders {
        if flow.is_some_and(|f| f != name) {
            continue;
        }
        let Ok(dir) = std::fs::read_dir(folder) else {
            continue;
        };
        for entry in dir.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            // Dotfiles are the file sink's temporary names and ours.
            if file_name.starts_with('.') {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let id = file_name
                .strip_suffix(".json")
                .unwrap_or(&file_name)
                .to_owned();
            let time = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            found.push((
                time,
                Found {
                    id,
                    flow: name.clone(),
                    file: entry.path(),
                },
            ));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
    found.into_iter().map(|(_, f)| f).collect()
}

/// Entries per flow: the dead-letter depth metric.
pub fn depths(folders: &[(String, PathBuf)]) -> HashMap<String, usize> {
    let mut depths: HashMap<String, usize> = folders.iter().map(|(f, _)| (f.clone(), 0)).collect();
    for found in scan(folders, None) {
        *depths.entry(found.flow).or_default() += 1;
    }
    depths
}

fn read_entry(file: &std::path::Path) -> Result<Value, String> {
    use std::io::Read;
    let opened = std::fs::File::open(file).map_err(|e| format!("cannot read it: {e}"))?;
    let mut text = Vec::new();
    opened
        .take(ENTRY_LIMIT)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read it: {e}"))?;
    let value: Value = serde_json::from_slice(&text)
        .map_err(|e| format!("it is not a dead-letter entry (not JSON: {e})"))?;
    if value.get("message").is_none() || !value["meta"].is_object() {
        return Err(
            "it is not a dead-letter entry: it has no `message` and `meta` (the dead letter \
             must be written with `format: json`)"
                .to_owned(),
        );
    }
    Ok(value)
}

/// Writes `value` to `target` through a dotfile in the same folder and a rename, so a
/// reader (and the listing) never sees half an entry.
fn write_entry(target: &std::path::Path, value: &Value) -> std::io::Result<()> {
    let folder = target.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(folder)?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = folder.join(format!(".{name}.{}.tmp", std::process::id()));
    let text = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, target)
}

/// The summary the list shows.
fn summary(found: &Found, entry: &Value) -> Value {
    let error = &entry["error"];
    json!({
        "id": found.id,
        "flow": found.flow,
        "file": found.file.display().to_string(),
        "message_id": error["message_id"],
        "kind": error["kind"],
        "step": error["step"],
        "message": error["message"],
        "time": error["time"],
        "replays": entry["replays"].as_array().map_or(0, Vec::len),
    })
}

/// A JSON error answer.
fn error(status: StatusCode, kind: &str, message: String) -> Response {
    trust::refuse(status, kind, message)
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

/// `GET /api/dead-letters[?flow=F]`.
pub async fn list(
    State(admin): State<Admin>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let folders = admin.registry.dead_letter_folders().await;
    let flow = query.get("flow").cloned();
    let entries = blocking(move || {
        scan(&folders, flow.as_deref())
            .iter()
            .filter_map(|found| read_entry(&found.file).ok().map(|e| summary(found, &e)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    Json(Value::Array(entries))
}

/// Finds entry `id`: its file, or the error answer (404; 409 when two flows have it).
async fn find(admin: &Admin, id: &str) -> Result<Found, Response> {
    if id.is_empty() || id.starts_with('.') || id.contains(['/', '\\']) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "id",
            format!("`{id}` is not a dead-letter id; `sluice dlq list` shows the ids"),
        ));
    }
    let folders = admin.registry.dead_letter_folders().await;
    let wanted = id.to_owned();
    let mut found = blocking(move || {
        scan(&folders, None)
            .into_iter()
            .filter(|f| f.id == wanted)
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    match found.len() {
        0 => Err(error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no dead letter `{id}` in the dead-letter folders of the running flows; \
                 `sluice dlq list` shows them"
            ),
        )),
        1 => Ok(found.remove(0)),
        _ => {
            let flows: Vec<String> = found.iter().map(|f| f.flow.clone()).collect();
            Err(error(
                StatusCode::CONFLICT,
                "ambiguous",
                format!(
                    "dead letter `{id}` is in the folders of several flows ({}); give each \
                     flow a dead-letter folder of its own",
                    flows.join(", ")
                ),
            ))
        }
    }
}

/// `GET /api/dead-letters/{id}`: the whole entry, with its id and flow.
pub async fn show(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    let found = match find(&admin, &id).await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let file = found.file.clone();
    match blocking(move || read_entry(&file)).await {
        Some(Ok(mut entry)) => {
            entry["id"] = json!(found.id);
            entry["flow"] = json!(found.flow);
            entry["file"] = json!(found.file.display().to_string());
            Json(entry).into_response()
        }
        Some(Err(e)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "entry",
            format!("dead letter `{id}` ({}): {e}", found.file.display()),
        ),
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the read was cancelled".to_owned(),
        ),
    }
}

/// What a replay or purge request names: `{"ids": [...]}` or `{"all": true, "flow": F}`,
/// and for a replay of one id an edited `payload`.
struct Selection {
    ids: Vec<String>,
    all: bool,
    flow: Option<String>,
    payload: Option<Value>,
}

fn selection(body: &[u8], replay: bool) -> Result<Selection, String> {
    let bad = |message: String| message;
    let value: Value = sluice_engine::parse_json(body).map_err(|e| bad(e.to_string()))?;
    let Some(object) = value.as_object() else {
        return Err(bad(
            "the body must be a JSON object: {\"ids\": [...]}".to_owned()
        ));
    };
    let allowed: &[&str] = if replay {
        &["ids", "all", "flow", "payload"]
    } else {
        &["ids", "all", "flow"]
    };
    if let Some(key) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown key `{key}`; expected one of: {}",
            allowed.join(", ")
        )));
    }
    let ids = match object.get("ids") {
        None => Vec::new(),
        Some(Value::Array(ids)) => ids
            .iter()
            .map(|id| id.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("`ids` must be a list of strings".to_owned()))?,
        Some(_) => return Err(bad("`ids` must be a list of strings".to_owned())),
    };
    let all = match object.get("all") {
        None => false,
        Some(Value::Bool(all)) => *all,
        Some(_) => return Err(bad("`all` must be true or false".to_owned())),
    };
    let flow = match object.get("flow") {
        None | Some(Value::Null) => None,
        Some(Value::String(flow)) => Some(flow.clone()),
        Some(_) => return Err(bad("`flow` must be a flow name".to_owned())),
    };
    let payload = object.get("payload").cloned();
    if all != ids.is_empty() {
        return Err(bad(
            "name the entries: either `ids` (a non-empty list) or `all: true` (with an \
             optional `flow`)"
                .to_owned(),
        ));
    }
    if flow.is_some() && !all {
        return Err(bad("`flow` only goes with `all: true`".to_owned()));
    }
    if payload.is_some() && ids.len() != 1 {
        return Err(bad(
            "an edited `payload` replays exactly one entry: give one id".to_owned(),
        ));
    }
    Ok(Selection {
        ids,
        all,
        flow,
        payload,
    })
}

/// The entries a selection names: found ones, and the answers for those that are not.
async fn selected(admin: &Admin, selection: &Selection) -> Vec<Result<Found, (String, Value)>> {
    if selection.all {
        let folders = admin.registry.dead_letter_folders().await;
        let flow = selection.flow.clone();
        return blocking(move || scan(&folders, flow.as_deref()))
            .await
            .unwrap_or_default()
            .into_iter()
            .map(Ok)
            .collect();
    }
    let mut out = Vec::new();
    for id in &selection.ids {
        match find(admin, id).await {
            Ok(found) => out.push(Ok(found)),
            Err(answer) => {
                let status = answer.status();
                let body = axum::body::to_bytes(answer.into_body(), 64 * 1024)
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .unwrap_or(Value::Null);
                let kind = if status == StatusCode::NOT_FOUND {
                    "missing"
                } else {
                    "error"
                };
                out.push(Err((
                    id.clone(),
                    json!({"id": id, "outcome": kind, "error": body["error"]}),
                )));
            }
        }
    }
    out
}

/// `POST /api/dead-letters/replay`.
pub async fn replay(State(admin): State<Admin>, body: axum::body::Bytes) -> Response {
    let selection = match selection(&body, true) {
        Ok(selection) => selection,
        Err(message) => return error(StatusCode::BAD_REQUEST, "request", message),
    };
    // One replay at a time: two requests naming one entry must not run it twice.
    let _one = admin.replaying.lock().await;
    let mut results = Vec::new();
    for item in selected(&admin, &selection).await {
        match item {
            Ok(found) => results.push(replay_one(&admin, found, selection.payload.clone()).await),
            Err((_, answer)) => results.push(answer),
        }
    }
    Json(json!({"results": results})).into_response()
}

/// The metadata a replay runs with: the original's, with a fresh `message_id`,
/// `replayed_from` (the original message id) and `replay_count`.
fn replay_meta(entry: &Value, edited: bool) -> Result<Meta, String> {
    let original = entry["meta"].as_object().cloned().unwrap_or_default();
    let mut meta = Meta::new();
    for (key, value) in original {
        let Value::String(value) = value else {
            return Err(format!(
                "its metadata `{key}` is not a string; the entry was changed by hand"
            ));
        };
        meta.insert(key, value);
    }
    let undecodable = meta.contains_key(sluice_engine::UNDECODABLE);
    if undecodable && !edited {
        return Err(
            "its body could not be read when it arrived, so it would fail again; replay it \
             with an edited payload (`sluice dlq replay ID --edit`)"
                .to_owned(),
        );
    }
    if edited {
        meta.remove(sluice_engine::UNDECODABLE);
        meta.remove(sluice_engine::BODY_ENCODING);
    }
    let from = entry["error"]["message_id"]
        .as_str()
        .or_else(|| meta.get(sluice_engine::MESSAGE_ID).map(String::as_str))
        .unwrap_or("-")
        .to_owned();
    let before: u64 = meta
        .get("replay_count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let tried = entry["replays"].as_array().map_or(0, Vec::len) as u64;
    meta.remove(sluice_engine::MESSAGE_ID);
    meta.remove("flow");
    meta.insert("replayed_from".to_owned(), from);
    meta.insert("replay_count".to_owned(), (before + tried + 1).to_string());
    Ok(meta)
}

async fn replay_one(admin: &Admin, found: Found, payload: Option<Value>) -> Value {
    let file = found.file.clone();
    let entry = match blocking(move || read_entry(&file)).await {
        Some(Ok(entry)) => entry,
        Some(Err(e)) => {
            return json!({"id": found.id, "flow": found.flow, "outcome": "error",
                "error": {"kind": "entry", "message": e}});
        }
        None => return json!({"id": found.id, "outcome": "error"}),
    };
    let edited = payload.is_some();
    let meta = match replay_meta(&entry, edited) {
        Ok(meta) => meta,
        Err(e) => {
            return json!({"id": found.id, "flow": found.flow, "outcome": "error",
                "error": {"kind": "entry", "message": format!("dead letter `{}` cannot be replayed: {e}", found.id)}});
        }
    };
    let message = payload.unwrap_or_else(|| entry["message"].clone());
    let Some((message_id, outcome)) = admin.registry.replay(&found.flow, message, meta).await
    else {
        return json!({"id": found.id, "flow": found.flow, "outcome": "error",
            "error": {"kind": "not_found", "message": format!("flow `{}` is not running", found.flow)}});
    };
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let (name, failure) = match &outcome {
        Outcome::Delivered(_) => ("delivered", None),
        Outcome::Completed(_) => ("completed", None),
        Outcome::Filtered => ("filtered", None),
        Outcome::Failed(failure) => (
            "error",
            Some(serde_json::to_value(&failure.envelope).unwrap_or(Value::Null)),
        ),
    };
    let mut record = Map::new();
    record.insert("time".to_owned(), json!(time));
    record.insert("message_id".to_owned(), json!(message_id));
    record.insert("outcome".to_owned(), json!(name));
    record.insert("edited".to_owned(), json!(edited));
    if let Some(failure) = &failure {
        record.insert("error".to_owned(), failure.clone());
    }
    let mut entry = entry;
    let file = found.file.clone();
    let failed = failure.is_some();
    let written = blocking(move || -> std::io::Result<PathBuf> {
        let replays = entry
            .as_object_mut()
            .map(|o| o.entry("replays").or_insert_with(|| json!([])));
        if let Some(Value::Array(replays)) = replays {
            replays.push(Value::Object(record));
        }
        if failed {
            write_entry(&file, &entry)?;
            return Ok(file);
        }
        let folder = file.parent().unwrap_or(std::path::Path::new("."));
        let target = folder
            .join(REPLAYED)
            .join(file.file_name().unwrap_or_default());
        write_entry(&target, &entry)?;
        std::fs::remove_file(&file)?;
        Ok(target)
    })
    .await;
    let mut answer = json!({
        "id": found.id,
        "flow": found.flow,
        "outcome": name,
        "message_id": message_id,
    });
    if let Some(failure) = failure {
        answer["error"] = failure;
    }
    match written {
        Some(Ok(path)) => answer["file"] = json!(path.display().to_string()),
        Some(Err(e)) => {
            tracing::error!(flow = %found.flow, id = %found.id, "dead letter replayed ({name}) but its entry could not be updated: {e}");
            answer["entry_error"] = json!(format!("the entry could not be updated: {e}"));
        }
        None => {}
    }
    answer
}

/// `POST /api/dead-letters/purge`: deletes entries (not the `replayed/` area).
pub async fn purge(State(admin): State<Admin>, body: axum::body::Bytes) -> Response {
    let selection = match selection(&body, false) {
        Ok(selection) => selection,
        Err(message) => return error(StatusCode::BAD_REQUEST, "request", message),
    };
    let _one = admin.replaying.lock().await;
    let mut results = Vec::new();
    for item in selected(&admin, &selection).await {
        match item {
            Ok(found) => {
                let file = found.file.clone();
                let removed = blocking(move || std::fs::remove_file(&file)).await;
                results.push(match removed {
                    Some(Ok(())) => {
                        json!({"id": found.id, "flow": found.flow, "outcome": "purged"})
                    }
                    Some(Err(e)) => json!({"id": found.id, "flow": found.flow, "outcome": "error",
                        "error": {"kind": "io", "message": e.to_string()}}),
                    None => json!({"id": found.id, "outcome": "error"}),
                });
            }
            Err((_, answer)) => results.push(answer),
        }
    }
    Json(json!({"results": results})).into_response()
}
