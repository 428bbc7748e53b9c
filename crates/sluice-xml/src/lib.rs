//! XML ⇄ JSON for sluice's `format: xml`: one documented convention both ways, records read
//! one at a time from a large document, and no DTD processing at all.
//!
//! # The convention
//!
//! An element becomes a JSON value:
//!
//! - an element with neither attributes nor child elements becomes its text, a string
//!   (`<qty>2</qty>` → `"2"`, `<note/>` → `""`): XML has no numbers, so nothing is guessed;
//! - any other element becomes an object, in document order: each attribute as `"@name"`
//!   (a string), each child element under its name, and its text, if any that is not only
//!   white space, as `"#text"`;
//! - a child name that occurs more than once becomes an array of the elements, in order; a
//!   name listed in [`ReadOptions::arrays`] is an array even when it occurs once;
//! - names are kept as written, with their namespace prefix (`ns:Order`), and namespace
//!   declarations are attributes like any other (`"@xmlns:ns"`), so a document reads back with
//!   the same namespaces;
//! - a whole document is an object of one key, the root element's name; a record (see
//!   [`Records`]) is the value of its element alone;
//! - CDATA is text; comments, processing instructions and the XML declaration are dropped.
//!
//! White space between elements (indentation) is not text. The text of an element that also
//! has child elements ("mixed content") keeps its segments, joined, but not their places
//! between the children: data documents have none, and the convention is lossless for them.
//!
//! JSON → XML ([`to_xml`]) is the inverse: `"@name"` keys are attributes, `"#text"` is text,
//! other keys are child elements, an array is the element repeated, a string, number or
//! boolean is text, `null` an empty element. So XML → JSON → XML gives the same document (up
//! to indentation and the dropped parts), and JSON in the convention's form (strings, arrays of
//! two or more, or names in `arrays`) → XML → JSON gives the same JSON.
//!
//! # Safety
//!
//! A document with a `<!DOCTYPE …>` is refused: without a DTD there are no external entities
//! (XXE) and no entity expansion ("billion laughs"). The only references are the five
//! predefined entities and character references. Elements nested deeper than
//! [`ReadOptions::max_depth`] are refused. Input must be UTF-8.

mod error;
mod lines;
mod read;
mod write;

pub use error::XmlError;
pub use read::{ReadOptions, Record, RecordPath, Records, count_records, is_name, to_json};
pub use write::{WriteError, to_xml};

/// The nesting depth refused by default, as for JSON bodies (serde_json's limit).
pub const DEFAULT_MAX_DEPTH: usize = 128;

/// The attribute prefix of the convention.
pub const ATTRIBUTE_PREFIX: char = '@';

/// The key of an element's text when it also has attributes or children.
pub const TEXT_KEY: &str = "#text";
