//! [`Schema`]: a JSON Schema compiled once, shared by every clone.

use std::fmt;
use std::sync::{Arc, OnceLock};

use jsonschema::error::ValidationErrorKind;
use palisade_core::{Rejected, Violation};
use serde_json::Value;

/// At most this many violations are reported (the rest are counted).
pub const MAX_VIOLATIONS: usize = 32;

const OPENAI_CHAT: &str = include_str!("../schemas/openai_chat.json");
const ANTHROPIC_MESSAGES: &str = include_str!("../schemas/anthropic_messages.json");
const OPENAI_RESPONSES: &str = include_str!("../schemas/openai_responses.json");
const OPENAI_EMBEDDINGS: &str = include_str!("../schemas/openai_embeddings.json");

/// A compiled JSON Schema. Cloning shares the compiled form.
///
/// ```
/// use palisade_schema::Schema;
/// use serde_json::json;
///
/// let schema = Schema::openai_chat();
/// assert!(schema.check(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})).is_ok());
/// let err = schema.check(&json!({"model": "gpt-4o-mini", "temperature": "3", "messages": "hi"})).unwrap_err();
/// let pointers: Vec<&str> = err.violations().iter().map(|v| v.pointer()).collect();
/// assert_eq!(pointers, ["/temperature", "/messages"]);
/// ```
#[derive(Clone)]
pub struct Schema {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    validator: jsonschema::Validator,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

/// A schema that does not compile.
#[derive(Debug)]
pub struct SchemaError {
    name: String,
    reason: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the JSON Schema `{}` is invalid: {}; fix the schema (it is checked against its draft's meta-schema)",
            self.name, self.reason
        )
    }
}

impl std::error::Error for SchemaError {}

fn bundled(cell: &'static OnceLock<Schema>, name: &str, text: &str) -> Schema {
    cell.get_or_init(|| {
        // The bundled schemas are part of this crate and tested to compile;
        // should one ever fail, an always-passing schema keeps the stack up
        // and the failure is logged nowhere silently: `name` says so.
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| Schema::new(name, &v).ok())
            .unwrap_or_else(|| Schema::accept_all(&format!("{name} (failed to compile)")))
    })
    .clone()
}

fn escape_token(t: &str) -> String {
    t.replace('~', "~0").replace('/', "~1")
}

impl Schema {
    /// Compiles `schema` (its `$schema` picks the draft; 2020-12 when
    /// absent). `name` appears in errors.
    ///
    /// # Errors
    ///
    /// [`SchemaError`] when `schema` is not a valid JSON Schema. References
    /// to other documents are not fetched (no network, no files).
    pub fn new(name: &str, schema: &Value) -> Result<Self, SchemaError> {
        let validator = jsonschema::validator_for(schema).map_err(|e| SchemaError {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                validator,
            }),
        })
    }

    fn accept_all(name: &str) -> Self {
        #[allow(clippy::expect_used)] // `true` is a valid schema in every draft.
        let validator =
            jsonschema::validator_for(&Value::Bool(true)).expect("`true` is a valid schema");
        Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                validator,
            }),
        }
    }

    /// The bundled schema of an OpenAI chat completions request
    /// (`schemas/openai_chat.json`): model, messages by role, content parts,
    /// tool calls, tools, `tool_choice`, `response_format`, sampling
    /// parameters with their types. Unknown top-level fields pass.
    pub fn openai_chat() -> Self {
        static CELL: OnceLock<Schema> = OnceLock::new();
        bundled(&CELL, "openai_chat", OPENAI_CHAT)
    }

    /// The bundled schema of an Anthropic messages request
    /// (`schemas/anthropic_messages.json`): model, `max_tokens`, messages and
    /// content blocks, system, tools, `tool_choice`, thinking, sampling
    /// parameters with their types. Unknown top-level fields pass.
    pub fn anthropic_messages() -> Self {
        static CELL: OnceLock<Schema> = OnceLock::new();
        bundled(&CELL, "anthropic_messages", ANTHROPIC_MESSAGES)
    }

    /// The bundled schema of an OpenAI Responses API request
    /// (`schemas/openai_responses.json`): no field is required (a stored
    /// prompt can stand for the model and the input); input items by type
    /// (a message needs its content, a `function_call` its `call_id`, `name`
    /// and `arguments`, a `function_call_output` its `call_id` and
    /// `output`), function tools' names, string `metadata` values, counts
    /// not below zero. Unknown fields, item and tool types pass.
    pub fn openai_responses() -> Self {
        static CELL: OnceLock<Schema> = OnceLock::new();
        bundled(&CELL, "openai_responses", OPENAI_RESPONSES)
    }

    /// The bundled schema of an OpenAI embeddings request
    /// (`schemas/openai_embeddings.json`): `model` and a non-empty `input`
    /// of text, texts, tokens or token lists; `dimensions` not below zero.
    /// Unknown fields (OpenAI-compatible servers' extras) pass.
    pub fn openai_embeddings() -> Self {
        static CELL: OnceLock<Schema> = OnceLock::new();
        bundled(&CELL, "openai_embeddings", OPENAI_EMBEDDINGS)
    }

    /// The schema's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether `value` is valid (fast path: no error is built).
    pub fn is_valid(&self, value: &Value) -> bool {
        self.inner.validator.is_valid(value)
    }

    /// Checks `value`.
    ///
    /// # Errors
    ///
    /// [`Rejected`] listing every violation (up to [`MAX_VIOLATIONS`]) with
    /// its JSON pointer; a missing property points at the property itself
    /// (`/messages`, not the object holding it).
    pub fn check(&self, value: &Value) -> Result<(), Rejected> {
        if self.inner.validator.is_valid(value) {
            return Ok(());
        }
        let mut out = Vec::new();
        let mut more = 0usize;
        for e in self.inner.validator.iter_errors(value) {
            if out.len() == MAX_VIOLATIONS {
                more += 1;
                continue;
            }
            let mut pointer = e.instance_path().as_str().to_owned();
            let message = match e.kind() {
                ValidationErrorKind::Required { property } => {
                    let p = property.as_str().unwrap_or_default();
                    pointer.push('/');
                    pointer.push_str(&escape_token(p));
                    "is required".to_owned()
                }
                _ => {
                    let mut m = e.to_string();
                    if m.len() > 300 {
                        let mut cut = 300;
                        while !m.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        m.truncate(cut);
                        m.push('…');
                    }
                    m
                }
            };
            out.push(Violation::new(pointer, message));
        }
        if more > 0 {
            out.push(Violation::new(
                "",
                format!(
                    "… and {more} more violations of the `{}` schema",
                    self.name()
                ),
            ));
        }
        if out.is_empty() {
            out.push(Violation::new(
                "",
                format!("the body does not match the `{}` schema", self.name()),
            ));
        }
        Err(Rejected::new(out))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_bundled_schemas_compile() {
        for (name, text) in [("openai", OPENAI_CHAT), ("anthropic", ANTHROPIC_MESSAGES)] {
            let v: Value = serde_json::from_str(text).unwrap();
            Schema::new(name, &v).unwrap();
        }
        assert_eq!(Schema::openai_chat().name(), "openai_chat");
    }

    #[test]
    fn required_properties_point_at_themselves_escaped() {
        let s = Schema::new("t", &serde_json::json!({"required": ["a/b"]})).unwrap();
        let e = s.check(&serde_json::json!({})).unwrap_err();
        assert_eq!(e.violations()[0].pointer(), "/a~1b");
    }

    #[test]
    fn an_invalid_schema_is_an_error_naming_it() {
        let e = Schema::new("mine", &serde_json::json!({"type": 7})).unwrap_err();
        assert!(e.to_string().contains("`mine`"), "{e}");
    }
}
