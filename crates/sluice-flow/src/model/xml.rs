//! The `xml:` options of `format: xml` (the convention itself is the `sluice-xml` crate's and
//! docs/flow-format.md's "XML" section).

use crate::Text;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// How a trigger reads `format: xml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct XmlReadConfig {
    /// The elements that are messages, from the root down: `/Orders/Order` makes each `Order`
    /// of the root `Orders` a message of its own, read one at a time, so the file may be far
    /// larger than memory. Absent: the whole document is one message, an object of one key,
    /// the root element's name.
    #[schemars(with = "Option<Text>")]
    pub record: Option<Spanned<Text>>,
    /// Element names that are always arrays, even where they occur once (by default a name
    /// is an array only where it repeats).
    #[serde(default)]
    pub arrays: Vec<String>,
}

/// How a sink writes `format: xml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct XmlWriteConfig {
    /// The root element's name; the payload is its content. Absent: the payload must be an
    /// object of one key, the root's name (the form a whole document is read in).
    #[schemars(with = "Option<Text>")]
    pub root: Option<Spanned<Text>>,
}
