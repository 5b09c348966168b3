//! A YAML document tree that remembers where every node came from, built from
//! saphyr-parser events: anchors, aliases and `<<` merge keys are resolved here
//! so the rest of the crate sees plain mappings.

use indexmap::IndexMap;
use saphyr_parser::{Event, Parser, ScalarStyle, Span, SpannedEventReceiver};
use std::collections::HashMap;
use std::fmt;

/// 1-based line and column of a node in its file (0 when made by the loader).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// Compose's override tags: `!reset` drops an inherited value, `!override`
/// replaces it instead of merging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeTag {
    Reset,
    Override,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    /// Where the value starts.
    pub pos: Pos,
    /// Where the key of this value starts, when it is a mapping value.
    pub key_pos: Pos,
    pub tag: Option<MergeTag>,
}

pub type Map = IndexMap<String, Node>;

#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Map),
}

impl Node {
    pub fn new(value: Value) -> Node {
        Node::at(value, Pos::default())
    }
    pub fn at(value: Value, pos: Pos) -> Node {
        Node {
            value,
            pos,
            key_pos: pos,
            tag: None,
        }
    }
    pub fn str(s: impl Into<String>) -> Node {
        Node::new(Value::Str(s.into()))
    }
    pub fn map(m: Map) -> Node {
        Node::new(Value::Map(m))
    }
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }
    pub fn as_map_mut(&mut self) -> Option<&mut Map> {
        match &mut self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }
    pub fn as_seq(&self) -> Option<&Vec<Node>> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }
    /// The value as text, the way compose-go reads a scalar into a string.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(format_float(*f)),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map().and_then(|m| m.get(key))
    }
    /// Converts to JSON (for typed deserialisation and `--format json`).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(s) => J::Array(s.iter().map(Node::to_json).collect()),
            Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()),
        }
    }
    /// Builds a position-less tree from JSON (used by tests and vectors).
    pub fn from_json(v: &serde_json::Value) -> Node {
        use serde_json::Value as J;
        Node::new(match v {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(0.0)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(a) => Value::Seq(a.iter().map(Node::from_json).collect()),
            J::Object(o) => Value::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), Node::from_json(v)))
                    .collect(),
            ),
        })
    }
}

pub fn format_float(f: f64) -> String {
    if f.is_infinite() {
        if f > 0.0 { ".inf" } else { "-.inf" }.to_string()
    } else if f.is_nan() {
        ".nan".to_string()
    } else {
        f.to_string()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

enum Frame {
    Seq(Node, Option<usize>),
    /// The mapping, its anchor, a pending key, and `<<` sources to merge in at the end.
    Map(Node, Option<usize>, Option<(String, Pos)>, Vec<Node>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
    error: Option<YamlError>,
}

impl Builder {
    fn push_value(&mut self, mut node: Node, anchor: Option<usize>, key_style_plain: bool) {
        if let Some(a) = anchor {
            self.anchors.insert(a, node.clone());
        }
        let mut error = None;
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(seq, _)) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map(map, _, pending, merges)) => match pending.take() {
                None => {
                    let mut key = node.scalar_text().unwrap_or_else(|| "null".to_string());
                    if key == "<<" && !key_style_plain {
                        // A quoted "<<" is an ordinary key, not a merge.
                        key = "\u{0}<<".to_string();
                    }
                    if !matches!(
                        node.value,
                        Value::Str(_)
                            | Value::Int(_)
                            | Value::Float(_)
                            | Value::Bool(_)
                            | Value::Null
                    ) {
                        error = Some((node.pos, "mapping keys must be scalars".to_string()));
                    }
                    *pending = Some((key, node.pos));
                }
                Some((key, key_pos)) => {
                    if key == "<<" {
                        merges.push(node);
                        return;
                    }
                    let key = if key == "\u{0}<<" {
                        "<<".to_string()
                    } else {
                        key
                    };
                    node.key_pos = key_pos;
                    let m = map.as_map_mut().expect("map frame");
                    if m.contains_key(&key) {
                        error = Some((key_pos, format!("mapping key {key:?} already defined")));
                    }
                    m.insert(key, node);
                }
            },
        }
        if let Some((pos, message)) = error {
            self.fail(pos, &message);
        }
    }

    fn fail(&mut self, pos: Pos, message: &str) {
        if self.error.is_none() {
            self.error = Some(YamlError {
                pos,
                message: message.to_string(),
            });
        }
    }

    fn end_map(&mut self, mut map: Node, merges: Vec<Node>) -> Node {
        let Value::Map(own) = &mut map.value else {
            return map;
        };
        for source in merges {
            let sources = match source.value {
                Value::Seq(items) => items,
                _ => vec![source],
            };
            for s in sources {
                match s.value {
                    Value::Map(m) => {
                        for (k, v) in m {
                            own.entry(k).or_insert(v);
                        }
                    }
                    _ => self.fail(s.pos, "merge key << needs a mapping or a list of mappings"),
                }
            }
        }
        map
    }
}

impl<'i> SpannedEventReceiver<'i> for Builder {
    fn on_event(&mut self, ev: Event<'i>, span: Span) {
        let pos = pos_of(&span);
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let tag_name = tag.as_ref().map(|t| (t.handle.clone(), t.suffix.clone()));
                let mut node = Node::at(resolve_scalar(&text, style, tag_name.as_ref()), pos);
                node.tag = merge_tag(tag_name.as_ref());
                if node.tag == Some(MergeTag::Reset) && text.is_empty() {
                    node.value = Value::Null;
                }
                let anchor = (anchor > 0).then_some(anchor);
                self.push_value(node, anchor, style == ScalarStyle::Plain);
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut n) => {
                    n.pos = pos;
                    self.push_value(n, None, false)
                }
                None => self.fail(pos, "unknown alias"),
            },
            Event::SequenceStart(anchor, tag) => {
                let mut n = Node::at(Value::Seq(Vec::new()), pos);
                n.tag = merge_tag(
                    tag.as_ref()
                        .map(|t| (t.handle.clone(), t.suffix.clone()))
                        .as_ref(),
                );
                self.stack
                    .push(Frame::Seq(n, (anchor > 0).then_some(anchor)));
            }
            Event::MappingStart(anchor, tag) => {
                let mut n = Node::at(Value::Map(Map::new()), pos);
                n.tag = merge_tag(
                    tag.as_ref()
                        .map(|t| (t.handle.clone(), t.suffix.clone()))
                        .as_ref(),
                );
                self.stack.push(Frame::Map(
                    n,
                    (anchor > 0).then_some(anchor),
                    None,
                    Vec::new(),
                ));
            }
            Event::SequenceEnd => {
                if let Some(Frame::Seq(n, anchor)) = self.stack.pop() {
                    self.push_value(n, anchor, false);
                }
            }
            Event::MappingEnd => {
                if let Some(Frame::Map(n, anchor, _, merges)) = self.stack.pop() {
                    let n = self.end_map(n, merges);
                    self.push_value(n, anchor, false);
                }
            }
            _ => {}
        }
    }
}

fn merge_tag(tag: Option<&(String, String)>) -> Option<MergeTag> {
    match tag.map(|(h, s)| (h.as_str(), s.as_str())) {
        Some(("!", "reset")) => Some(MergeTag::Reset),
        Some(("!", "override")) => Some(MergeTag::Override),
        _ => None,
    }
}

/// YAML 1.2 core schema resolution of a plain scalar, as go-yaml v3 does it.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&(String, String)>) -> Value {
    if let Some((handle, suffix)) = tag {
        if (handle == "tag:yaml.org,2002:" || handle == "!!") && suffix == "str" {
            return Value::Str(text.to_string());
        }
    }
    if style != ScalarStyle::Plain {
        return Value::Str(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(text) {
        return Value::Int(i);
    }
    if is_float(text) {
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    Value::Str(text.to_string())
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (radix, body) = if let Some(h) = digits.strip_prefix("0x") {
        (16, h)
    } else if let Some(o) = digits.strip_prefix("0o") {
        (8, o)
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i64::from_str_radix(body, radix).ok()?;
    Some(if neg { -v } else { v })
}

fn is_float(text: &str) -> bool {
    let t = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let (int, frac) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], Some(&mantissa[i + 1..])),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = digits(int)
        && frac.is_none_or(digits)
        && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exp_ok && (frac.is_some() || exp.is_some())
}

/// Parses one YAML document (an empty text gives an empty mapping).
pub fn parse(text: &str) -> Result<Node, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut builder, false) {
        let m = e.marker();
        return Err(YamlError {
            pos: Pos {
                line: m.line(),
                col: m.col() + 1,
            },
            message: e.info().to_string(),
        });
    }
    if let Some(e) = builder.error {
        return Err(e);
    }
    Ok(builder
        .docs
        .into_iter()
        .next()
        .unwrap_or_else(|| Node::at(Value::Map(Map::new()), Pos { line: 1, col: 1 })))
}
