//! XML → JSON: a whole document ([`to_json`]) or the records at a path, one at a time
//! ([`Records`]), without holding more of the document than one record.

use crate::lines::{LineCounter, position_in};
use crate::{ATTRIBUTE_PREFIX, DEFAULT_MAX_DEPTH, TEXT_KEY, XmlError};
use quick_xml::XmlVersion;
use quick_xml::events::{BytesRef, BytesStart, Event};
use serde_json::{Map, Value};
use std::io::BufRead;

/// How a document is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    /// Element names that are always arrays, even when they occur once (`Line`, `ns:Item`).
    pub arrays: Vec<String>,
    /// Elements nested deeper than this are refused.
    pub max_depth: usize,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            arrays: Vec::new(),
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// The elements that are records: `/Orders/Order` is every `Order` child of the root
/// `Orders`. Names are matched as written, with their prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPath(Vec<String>);

impl RecordPath {
    /// Reads `/Root/Child/…`; the reason says what is wrong with it.
    pub fn parse(text: &str) -> Result<RecordPath, String> {
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "`{text}` does not start with `/`; write the path from the root element, e.g. `/Orders/Order`"
            ));
        };
        let segments: Vec<String> = rest.split('/').map(str::to_owned).collect();
        for segment in &segments {
            if !is_name(segment) {
                return Err(format!(
                    "`{segment}` in `{text}` is not an element name (a letter or `_` first, then letters, digits, `-`, `.`, `_`, `:`)"
                ));
            }
        }
        Ok(RecordPath(segments))
    }

    /// The element names from the root down.
    pub fn segments(&self) -> &[String] {
        &self.0
    }
}

impl std::fmt::Display for RecordPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for segment in &self.0 {
            write!(f, "/{segment}")?;
        }
        Ok(())
    }
}

/// Whether `name` is an XML element or attribute name (a letter or `_` first, then letters,
/// digits, `-`, `.`, `_`, `:`).
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
}

/// One record: its value and the line its element starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The element, in the convention's JSON form.
    pub value: Value,
    /// The 1-based line of its start tag.
    pub line: usize,
}

/// A simplified, owned event; text and attributes only when they are wanted.
enum Ev {
    Start {
        name: String,
        attributes: Vec<(String, String)>,
        newlines: usize,
    },
    Empty {
        name: String,
        attributes: Vec<(String, String)>,
        newlines: usize,
    },
    End,
    Text(String),
    Eof,
}

/// The event loop shared by the whole-document read and the records.
struct Parser<R> {
    reader: quick_xml::Reader<LineCounter<R>>,
    buf: Vec<u8>,
    options: ReadOptions,
}

impl<R: BufRead> Parser<R> {
    fn new(input: R, options: ReadOptions) -> Self {
        let mut reader = quick_xml::Reader::from_reader(LineCounter::new(input));
        let config = reader.config_mut();
        config.trim_text(false);
        config.check_end_names = true;
        config.expand_empty_elements = false;
        Parser {
            reader,
            buf: Vec::new(),
            options,
        }
    }

    fn error(&self, reason: impl Into<String>, offset: u64) -> XmlError {
        error_at(&self.reader, reason, offset)
    }

    fn next(&mut self, want: bool) -> Result<Ev, XmlError> {
        self.buf.clear();
        let at = self.reader.buffer_position();
        let event = match self.reader.read_event_into(&mut self.buf) {
            Ok(event) => event,
            Err(e) => {
                let offset = self.reader.error_position();
                let reason = e.to_string();
                return Err(self.error(reason, offset));
            }
        };
        // `self.reader` alone: the event borrows `self.buf`.
        let reader = &self.reader;
        let fail = |reason: String| error_at(reader, reason, at);
        let ev = match event {
            Event::Start(e) => {
                let (name, attributes, newlines) = element(&e).map_err(fail)?;
                Ev::Start {
                    name,
                    attributes,
                    newlines,
                }
            }
            Event::Empty(e) => {
                let (name, attributes, newlines) = element(&e).map_err(fail)?;
                Ev::Empty {
                    name,
                    attributes,
                    newlines,
                }
            }
            Event::End(_) => Ev::End,
            Event::Text(t) if want => Ev::Text(t.xml10_content().into_owned()),
            Event::CData(t) if want => Ev::Text(t.xml10_content().into_owned()),
            Event::Text(_) | Event::CData(_) => Ev::Text(String::new()),
            Event::GeneralRef(r) => match resolve(&r) {
                Ok(text) => Ev::Text(text),
                Err(reason) => return Err(error_at(reader, reason, at)),
            },
            Event::DocType(_) => {
                return Err(error_at(
                    reader,
                    "the document has a DOCTYPE: sluice does not process DTDs (so no external entity or entity expansion can happen); remove the DOCTYPE",
                    at,
                ));
            }
            Event::Decl(d) => {
                if let Some(Ok(encoding)) = d.encoding() {
                    let encoding = encoding.to_ascii_lowercase();
                    if encoding != "utf-8" && encoding != "utf8" {
                        return Err(error_at(
                            reader,
                            format!(
                                "the document declares encoding `{encoding}`; sluice reads UTF-8 only (convert it first, e.g. with iconv)"
                            ),
                            at,
                        ));
                    }
                }
                Ev::Text(String::new())
            }
            Event::Comment(_) | Event::PI(_) => Ev::Text(String::new()),
            Event::Eof => Ev::Eof,
        };
        Ok(ev)
    }

    /// Reads the content of an element whose start tag was just read, through its end tag.
    /// With `want` false it only checks the content (the counting pass of the records).
    fn content(
        &mut self,
        attributes: Vec<(String, String)>,
        depth: usize,
        want: bool,
    ) -> Result<Value, XmlError> {
        let mut children: Vec<(String, Value)> = Vec::new();
        let mut text = String::new();
        loop {
            let at = self.reader.buffer_position();
            match self.next(want)? {
                Ev::Start {
                    name, attributes, ..
                } => {
                    self.check_depth(depth + 1, at)?;
                    let value = self.content(attributes, depth + 1, want)?;
                    if want {
                        children.push((name, value));
                    }
                }
                Ev::Empty {
                    name, attributes, ..
                } => {
                    self.check_depth(depth + 1, at)?;
                    if want {
                        children.push((name, leaf(attributes)));
                    }
                }
                Ev::Text(t) => text.push_str(&t),
                Ev::End => break,
                Ev::Eof => {
                    return Err(self.error(
                        "the document ends inside an element (a missing end tag?)",
                        at,
                    ));
                }
            }
        }
        if !want {
            return Ok(Value::Null);
        }
        Ok(self.build(attributes, children, text))
    }

    fn check_depth(&self, depth: usize, at: u64) -> Result<(), XmlError> {
        if depth > self.options.max_depth {
            return Err(self.error(
                format!(
                    "elements are nested deeper than {} levels",
                    self.options.max_depth
                ),
                at,
            ));
        }
        Ok(())
    }

    fn build(
        &self,
        attributes: Vec<(String, String)>,
        children: Vec<(String, Value)>,
        text: String,
    ) -> Value {
        if attributes.is_empty() && children.is_empty() {
            return Value::String(text);
        }
        let mut map = Map::new();
        for (name, value) in attributes {
            map.insert(format!("{ATTRIBUTE_PREFIX}{name}"), Value::String(value));
        }
        let has_children = !children.is_empty();
        for (name, value) in children {
            match map.get_mut(&name) {
                Some(Value::Array(items)) => items.push(value),
                Some(single) => {
                    let first = single.take();
                    *single = Value::Array(vec![first, value]);
                }
                None if self.options.arrays.contains(&name) => {
                    map.insert(name, Value::Array(vec![value]));
                }
                None => {
                    map.insert(name, value);
                }
            }
        }
        // Between child elements, white space is indentation; beside attributes alone, the
        // text is the element's value and kept exactly.
        let text = if has_children { text.trim() } else { &text };
        if !text.trim().is_empty() {
            map.insert(TEXT_KEY.to_owned(), Value::String(text.to_owned()));
        }
        Value::Object(map)
    }
}

fn error_at<R: BufRead>(
    reader: &quick_xml::Reader<LineCounter<R>>,
    reason: impl Into<String>,
    offset: u64,
) -> XmlError {
    XmlError::at(reason, offset, reader.get_ref().position(offset))
}

/// The value of an empty element.
fn leaf(attributes: Vec<(String, String)>) -> Value {
    if attributes.is_empty() {
        return Value::String(String::new());
    }
    let map = attributes
        .into_iter()
        .map(|(name, value)| (format!("{ATTRIBUTE_PREFIX}{name}"), Value::String(value)))
        .collect();
    Value::Object(map)
}

type Element = (String, Vec<(String, String)>, usize);

/// A start tag's name, its attributes (when wanted) and the newlines inside the tag.
fn element(e: &BytesStart<'_>) -> Result<Element, String> {
    let name = e.name().as_ref().to_owned();
    // Names the writer could not write back are refused here: what is read can be written.
    if !is_name(&name) {
        return Err(format!(
            "`<{name}` is not an element name sluice reads (a letter or `_` first, then letters, digits, `-`, `.`, `_`, `:`)"
        ));
    }
    let newlines = e.attributes_raw().bytes().filter(|b| *b == b'\n').count();
    let mut attributes = Vec::new();
    // Attributes are read in the counting pass too: a record must not fail later.
    for attribute in e.attributes() {
        let attribute = attribute.map_err(|e| format!("a malformed attribute of <{name}>: {e}"))?;
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| format!("the attribute value of <{name}> is refused: {e}; only &amp; &lt; &gt; &quot; &apos; and character references are defined"))?;
        let key = attribute.key.as_ref();
        if !is_name(key) {
            return Err(format!(
                "`{key}` of <{name}> is not an attribute name sluice reads"
            ));
        }
        attributes.push((key.to_owned(), value.into_owned()));
    }
    Ok((name, attributes, newlines))
}

/// The five predefined entities and character references; nothing else is defined.
fn resolve(r: &BytesRef<'_>) -> Result<String, String> {
    match r.resolve_char_ref() {
        Ok(Some(c)) => return Ok(c.to_string()),
        Ok(None) => {}
        Err(e) => return Err(format!("a bad character reference: {e}")),
    }
    let name: &str = r;
    quick_xml::escape::resolve_predefined_entity(name)
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "the entity `&{name};` is not defined: sluice reads no DTD, so only &amp; &lt; &gt; &quot; &apos; and character references are"
            )
        })
}

/// Reads a whole document: an object of one key, the root element's name.
pub fn to_json(bytes: &[u8], options: &ReadOptions) -> Result<Value, XmlError> {
    let exact = |e: XmlError| XmlError::at(e.reason, e.offset, position_in(bytes, e.offset));
    let mut parser = Parser::new(bytes, options.clone());
    let mut root: Option<(String, Value)> = None;
    loop {
        let at = parser.reader.buffer_position();
        let (name, value) = match parser.next(true).map_err(exact)? {
            Ev::Start {
                name, attributes, ..
            } => {
                let value = parser.content(attributes, 1, true).map_err(exact)?;
                (name, value)
            }
            Ev::Empty {
                name, attributes, ..
            } => (name, leaf(attributes)),
            Ev::Text(t) if t.trim().is_empty() => continue,
            Ev::Text(_) => {
                return Err(exact(parser.error("text outside the root element", at)));
            }
            Ev::End => unreachable_end(&parser, at).map_err(exact)?,
            Ev::Eof => break,
        };
        if root.is_some() {
            return Err(exact(parser.error(
                format!("a second root element <{name}>: a document has one"),
                at,
            )));
        }
        root = Some((name, value));
    }
    match root {
        Some((name, value)) => Ok(Value::Object(Map::from_iter([(name, value)]))),
        None => Err(XmlError::at(
            "the document has no element",
            bytes.len() as u64,
            position_in(bytes, bytes.len() as u64),
        )),
    }
}

/// quick-xml refuses an end tag without its start itself; this is the same refusal should
/// it ever let one through.
fn unreachable_end<R: BufRead>(parser: &Parser<R>, at: u64) -> Result<(String, Value), XmlError> {
    Err(parser.error("an end tag without its start tag", at))
}

/// The records of a document, one at a time: the elements at a [`RecordPath`], each read
/// whole when its start tag is reached and given out at its end tag. Memory holds one record.
/// After an error, the iterator ends.
pub struct Records<R> {
    parser: Parser<R>,
    path: RecordPath,
    stack: Vec<String>,
    done: bool,
    want: bool,
}

impl<R: BufRead> Records<R> {
    /// Reads `input` for the records at `path`.
    pub fn new(input: R, path: RecordPath, options: ReadOptions) -> Self {
        Records {
            parser: Parser::new(input, options),
            path,
            stack: Vec::new(),
            done: false,
            want: true,
        }
    }

    fn at_path(&self, name: &str) -> bool {
        let path = self.path.segments();
        path.len() == self.stack.len() + 1
            && path.last().is_some_and(|last| last == name)
            && self.stack.iter().zip(path).all(|(a, b)| a == b)
    }

    fn step(&mut self) -> Result<Option<Record>, XmlError> {
        loop {
            let at = self.parser.reader.buffer_position();
            match self.parser.next(self.want)? {
                Ev::Start {
                    name,
                    attributes,
                    newlines,
                } => {
                    let depth = self.stack.len() + 1;
                    self.parser.check_depth(depth, at)?;
                    if self.at_path(&name) {
                        let line = self.start_line(newlines);
                        let value = self.parser.content(attributes, depth, self.want)?;
                        return Ok(Some(Record { value, line }));
                    }
                    self.stack.push(name);
                }
                Ev::Empty {
                    name,
                    attributes,
                    newlines,
                } => {
                    self.parser.check_depth(self.stack.len() + 1, at)?;
                    if self.at_path(&name) {
                        let line = self.start_line(newlines);
                        let value = if self.want {
                            leaf(attributes)
                        } else {
                            Value::Null
                        };
                        return Ok(Some(Record { value, line }));
                    }
                }
                Ev::End => {
                    self.stack.pop();
                }
                Ev::Text(_) => {}
                Ev::Eof => {
                    if let Some(open) = self.stack.last() {
                        return Err(self.parser.error(
                            format!("the document ends inside <{open}> (a missing end tag?)"),
                            at,
                        ));
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// The line of the start tag just read, which may span `newlines` lines.
    fn start_line(&self, newlines: usize) -> usize {
        self.parser
            .reader
            .get_ref()
            .line()
            .saturating_sub(newlines)
            .max(1)
    }
}

impl<R: BufRead> Iterator for Records<R> {
    type Item = Result<Record, XmlError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = self.step().transpose();
        if !matches!(result, Some(Ok(_))) {
            self.done = true;
        }
        result
    }
}

/// Counts the records at `path` without building them, checking the whole document: the
/// file trigger's first pass, so that a malformed document is refused before any of its
/// records is sent.
pub fn count_records<R: BufRead>(
    input: R,
    path: RecordPath,
    options: ReadOptions,
) -> Result<usize, XmlError> {
    let mut records = Records::new(input, path, options);
    records.want = false;
    let mut count = 0;
    for record in records.by_ref() {
        record?;
        count += 1;
    }
    Ok(count)
}
