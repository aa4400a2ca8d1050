//! A manifest file's text → its front matter as JSON plus a line index, and its body.
//!
//! The front matter is parsed once by serde-saphyr into a tree whose every node carries its
//! source line; that tree becomes a `serde_json::Value` (what the JSON Schema validates and serde
//! deserializes) and a [`Lines`] index from JSON pointer to line, so every problem found later —
//! by the schema, by serde, by a semantic check — can name the line it is about.

use std::collections::HashMap;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

/// JSON pointer (`/egress/routes/0/host`) → 1-based line of that key (or list item).
#[derive(Debug, Default, Clone)]
pub(crate) struct Lines(HashMap<String, usize>);

impl Lines {
    /// The line of `pointer`, or of its nearest ancestor that has one.
    pub(crate) fn line(&self, pointer: &str) -> Option<usize> {
        let mut p = pointer;
        loop {
            if let Some(l) = self.0.get(p) {
                return Some(*l);
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return None,
            }
        }
    }
}

/// A manifest split into its parts.
#[derive(Debug)]
pub(crate) struct Document {
    pub(crate) front: Value,
    pub(crate) lines: Lines,
    pub(crate) body: String,
}

/// A problem found while reading the text itself (no front matter, bad YAML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
}

/// Splits `---\n<yaml>\n---\n<body>` and parses the YAML.
pub(crate) fn parse(text: &str) -> Result<Document, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().unwrap_or_default();
    if first.trim_end() != "---" {
        return Err(SyntaxError {
            line: Some(1),
            message: "no YAML front matter: a manifest starts with a line `---`, then its keys, then `---`".into(),
        });
    }
    let mut yaml = String::new();
    let mut closed = false;
    let mut consumed = first.len();
    for l in lines.by_ref() {
        consumed += l.len();
        if matches!(l.trim_end(), "---" | "...") {
            closed = true;
            break;
        }
        yaml.push_str(l);
    }
    if !closed {
        return Err(SyntaxError { line: None, message: "the front matter is never closed by a line `---`".into() });
    }
    let body = text[consumed..].trim().to_string();
    // Line numbers inside `yaml` are off by one (the opening `---`).
    let (front, lines) = if yaml.trim().is_empty() {
        (Value::Object(Map::new()), Lines::default())
    } else {
        let tree: Spanned<Node> = serde_saphyr::from_str(&yaml).map_err(|e| SyntaxError {
            line: e.location().map(|l| l.line() as usize + 1),
            message: e.to_string().lines().next().unwrap_or("invalid YAML").trim_start_matches("error: ").to_string(),
        })?;
        let mut index = HashMap::new();
        let front = to_json(tree, String::new(), &mut index);
        (front, Lines(index))
    };
    Ok(Document { front, lines, body })
}

/// A YAML node with the lines of its children.
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<Node>, Spanned<Node>)>),
}

fn to_json(node: Spanned<Node>, pointer: String, index: &mut HashMap<String, usize>) -> Value {
    index.entry(pointer.clone()).or_insert(node.referenced.line() as usize + 1);
    match node.value {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(b),
        Node::Int(i) => Value::from(i),
        Node::UInt(u) => Value::from(u),
        Node::Float(f) => serde_json::Number::from_f64(f).map(Value::Number).unwrap_or(Value::Null),
        Node::Str(s) => Value::String(s),
        Node::Seq(items) => Value::Array(
            items.into_iter().enumerate().map(|(i, item)| to_json(item, format!("{pointer}/{i}"), index)).collect(),
        ),
        Node::Map(entries) => {
            let mut map = Map::new();
            for (k, v) in entries {
                let key = match k.value {
                    Node::Str(s) => s,
                    Node::Int(i) => i.to_string(),
                    Node::UInt(u) => u.to_string(),
                    Node::Bool(b) => b.to_string(),
                    Node::Float(f) => f.to_string(),
                    Node::Null => "null".to_string(),
                    Node::Seq(_) | Node::Map(_) => "<complex key>".to_string(),
                };
                let child = format!("{pointer}/{}", escape(&key));
                index.insert(child.clone(), k.referenced.line() as usize + 1);
                let value = to_json(v, child, index);
                map.insert(key, value);
            }
            Value::Object(map)
        }
    }
}

/// JSON pointer escaping of one reference token (RFC 6901).
pub(crate) fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A JSON pointer as the key path people read: `/egress/routes/0/host` → `egress.routes[0].host`.
pub(crate) fn key_path(pointer: &str) -> String {
    let mut out = String::new();
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{token}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&token);
        }
    }
    out
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::UInt(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = a.next_entry()? {
                    entries.push(entry);
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_body_and_lines() {
        let doc = parse(
            "---\nenv:\n  A: \"1\"\negress:\n  routes:\n    - host: a.example\n      port: 443\n---\n\nDo the thing.\n",
        )
        .unwrap();
        assert_eq!(doc.body, "Do the thing.");
        assert_eq!(doc.front["egress"]["routes"][0]["port"], 443);
        assert_eq!(doc.front["env"]["A"], "1");
        assert_eq!(doc.lines.line("/env/A"), Some(3));
        assert_eq!(doc.lines.line("/egress/routes/0/port"), Some(7));
        assert_eq!(doc.lines.line("/egress/routes/0/nope"), Some(6), "falls back to the nearest ancestor");
        assert_eq!(key_path("/egress/routes/0/auth/token_ref"), "egress.routes[0].auth.token_ref");
        assert_eq!(key_path("/hosts/a~1b"), "hosts.a/b");
    }

    #[test]
    fn empty_front_matter_is_an_empty_object() {
        let doc = parse("---\n---\nbody").unwrap();
        assert_eq!(doc.front, serde_json::json!({}));
        assert_eq!(doc.body, "body");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        assert_eq!(parse("env: {}\n").unwrap_err().line, Some(1));
        assert!(parse("---\nenv: {}\n").unwrap_err().message.contains("never closed"));
        let e = parse("---\na: 1\nb: [1,\n---\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e:?}");
        let e = parse("---\na: 1\na: 2\n---\n").unwrap_err();
        assert!(e.message.contains("duplicate"), "{e:?}");
        assert_eq!(e.line, Some(3));
    }
}
