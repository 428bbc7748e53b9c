//! Configuration of the `mysql` connector (MariaDB and MySQL): a sink that inserts, upserts
//! or runs a parameterised statement, and an outbox trigger. The keys are the `postgres`
//! connector's wherever they mean the same.

use super::trigger::unspanned;
use crate::{Dur, Text};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::time::Duration;

fn default_mysql_url() -> Spanned<Text> {
    unspanned(Text::from("mysql://root@127.0.0.1:3306/test"))
}
fn default_pool() -> usize {
    8
}
fn default_batch() -> crate::Count {
    crate::Count(64)
}
fn default_poll() -> Dur {
    Dur(Duration::from_millis(500))
}
fn default_id() -> Text {
    Text::from("id")
}
fn default_payload() -> Text {
    Text::from("payload")
}

/// `on_conflict` of a `mysql` sink: an upsert (`ON DUPLICATE KEY UPDATE`). MariaDB decides
/// the conflict by any primary or unique key of the table, so there is no `key` to name.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlConflict {
    /// Columns overwritten with the new row's values on a duplicate key; empty: the
    /// existing row is kept as it is (the insert does nothing).
    #[serde(default)]
    #[schemars(with = "Vec<Text>")]
    pub update: Vec<Spanned<Text>>,
}

/// The `mysql` sink: one transaction per message, insert/upsert or a parameterised statement.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
// The sink builder refuses every other combination, at the key that is wrong.
#[schemars(extend("oneOf" = [
    {
        "required": ["table", "columns"],
        "properties": { "columns": { "minProperties": 1 } },
        "not": { "anyOf": [{ "required": ["sql"] }, { "required": ["args"] }] }
    },
    {
        "required": ["sql"],
        "not": { "anyOf": [{ "required": ["table"] }, { "required": ["columns"] }, { "required": ["on_conflict"] }] }
    }
]))]
pub struct MysqlSinkConfig {
    /// Connection URL, `mysql://user:password@host:port/database`; credentials may sit in it
    /// (`${env:…}`).
    #[serde(default = "default_mysql_url")]
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// Target table (`name` or `database.name`), with `columns`.
    #[schemars(with = "Option<Text>")]
    pub table: Option<Spanned<Text>>,
    /// Column → JMESPath expression giving its value.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, Text>")]
    pub columns: BTreeMap<String, Spanned<Text>>,
    /// Upsert instead of insert.
    #[schemars(with = "Option<MysqlConflict>")]
    pub on_conflict: Option<Spanned<MysqlConflict>>,
    /// A statement with `?` placeholders instead of `table`.
    #[schemars(with = "Option<Text>")]
    pub sql: Option<Spanned<Text>>,
    /// JMESPath expressions giving the `?` placeholders of `sql`, in order.
    #[serde(default)]
    #[schemars(with = "Vec<Text>")]
    pub args: Vec<Spanned<Text>>,
    /// Connections in the pool.
    #[serde(
        default = "default_pool",
        deserialize_with = "crate::units::at_least_one"
    )]
    #[schemars(range(min = 1))]
    pub pool: usize,
}

/// The `mysql` trigger: an outbox table polled with `FOR UPDATE SKIP LOCKED` (MariaDB 10.6
/// or later, MySQL 8.0 or later).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlTriggerConfig {
    /// Connection URL.
    #[serde(default = "default_mysql_url")]
    #[schemars(with = "Text")]
    pub url: Spanned<Text>,
    /// The outbox table.
    #[schemars(with = "Text")]
    pub table: Spanned<Text>,
    /// Its key column (a primary or unique key: rows are taken in its order and deleted by it).
    #[serde(default = "default_id")]
    pub id: Text,
    /// The column holding the payload (`JSON`, or text holding JSON).
    #[serde(default = "default_payload")]
    pub payload: Text,
    /// Rows claimed per poll.
    #[serde(default = "default_batch")]
    pub batch: crate::Count,
    /// Wait between polls that found nothing.
    #[serde(default = "default_poll")]
    pub poll: Dur,
}
