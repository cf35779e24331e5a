//! Request checks before anything leaves the gateway: the shape of an
//! OpenAI chat completion or Anthropic messages request, every violation
//! with its JSON pointer.
//!
//! This covers the fields the gateway and the providers reject most often
//! (model, messages, roles, content, sampling ranges, output budget, tools);
//! the full JSON-Schema layer (`palisade-schema`) will take its place.

use palisade_core::Violation;
use palisade_providers::Provider;
use serde_json::Value;

struct Checker {
    out: Vec<Violation>,
}

impl Checker {
    fn bad(&mut self, pointer: impl Into<String>, message: impl Into<String>) {
        self.out.push(Violation::new(pointer, message));
    }

    fn number(&mut self, body: &Value, key: &str, min: f64, max: f64) {
        match body.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => {
                let v = n.as_f64().unwrap_or(f64::NAN);
                if !(min..=max).contains(&v) {
                    self.bad(
                        format!("/{key}"),
                        format!("{v} is not between {min} and {max}"),
                    );
                }
            }
            Some(_) => self.bad(format!("/{key}"), "expected a number"),
        }
    }

    fn integer(&mut self, body: &Value, key: &str, min: u64, required: bool) {
        match body.get(key) {
            None if required => self.bad(format!("/{key}"), "is required"),
            None => {}
            Some(Value::Null) if !required => {}
            Some(v) => match v.as_u64() {
                Some(n) if n >= min => {}
                _ => self.bad(
                    format!("/{key}"),
                    format!("expected an integer of at least {min}"),
                ),
            },
        }
    }

    fn boolean(&mut self, body: &Value, key: &str) {
        if let Some(v) = body.get(key) {
            if !v.is_boolean() && !v.is_null() {
                self.bad(format!("/{key}"), "expected true or false");
            }
        }
    }

    fn content(&mut self, at: &str, content: Option<&Value>, nullable: bool) {
        match content {
            Some(Value::String(_)) => {}
            Some(Value::Null) | None if nullable => {}
            Some(Value::Array(parts)) => {
                for (j, p) in parts.iter().enumerate() {
                    if !p.get("type").is_some_and(Value::is_string) {
                        self.bad(
                            format!("{at}/content/{j}/type"),
                            "each content part needs a string `type`",
                        );
                    }
                }
            }
            None => self.bad(format!("{at}/content"), "is required"),
            Some(_) => self.bad(format!("{at}/content"), "expected string or array"),
        }
    }
}

/// Every violation in `body`, a request to `api`.
pub(crate) fn check(api: Provider, body: &Value) -> Vec<Violation> {
    let mut c = Checker { out: Vec::new() };
    if !body.is_object() {
        c.bad("", "the body must be a JSON object");
        return c.out;
    }
    match body.get("model") {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(Value::String(_)) => c.bad("/model", "must not be empty"),
        None => c.bad("/model", "is required"),
        Some(_) => c.bad("/model", "expected string"),
    }
    let anthropic = api == Provider::Anthropic;
    let roles: &[&str] = if anthropic {
        &["user", "assistant"]
    } else {
        &[
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "function",
        ]
    };
    match body.get("messages") {
        None => c.bad("/messages", "is required"),
        Some(Value::Array(ms)) if ms.is_empty() => {
            c.bad("/messages", "must hold at least one message");
        }
        Some(Value::Array(ms)) => {
            for (i, m) in ms.iter().enumerate() {
                let at = format!("/messages/{i}");
                if !m.is_object() {
                    c.bad(at, "expected an object with `role` and `content`");
                    continue;
                }
                let role = m.get("role").and_then(Value::as_str);
                match role {
                    Some(r) if roles.contains(&r) => {}
                    Some(r) => c.bad(
                        format!("{at}/role"),
                        format!("`{r}` is not one of {}", roles.join(", ")),
                    ),
                    None => c.bad(format!("{at}/role"), "expected string"),
                }
                // OpenAI: an assistant message may carry only tool calls.
                let nullable = !anthropic && role == Some("assistant");
                c.content(&at, m.get("content"), nullable);
            }
        }
        Some(_) => c.bad("/messages", "expected array"),
    }
    if anthropic {
        c.integer(body, "max_tokens", 1, true);
        c.number(body, "temperature", 0.0, 1.0);
        c.integer(body, "top_k", 0, false);
        match body.get("system") {
            None | Some(Value::String(_) | Value::Array(_)) => {}
            Some(_) => c.bad("/system", "expected string or array"),
        }
    } else {
        c.integer(body, "max_tokens", 1, false);
        c.integer(body, "max_completion_tokens", 1, false);
        c.integer(body, "n", 1, false);
        c.number(body, "temperature", 0.0, 2.0);
        c.number(body, "presence_penalty", -2.0, 2.0);
        c.number(body, "frequency_penalty", -2.0, 2.0);
    }
    c.number(body, "top_p", 0.0, 1.0);
    c.boolean(body, "stream");
    match body.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) => {
            for (i, t) in tools.iter().enumerate() {
                let at = format!("/tools/{i}");
                if anthropic {
                    if !t.get("name").is_some_and(Value::is_string) {
                        c.bad(format!("{at}/name"), "expected string");
                    }
                } else if !t
                    .get("function")
                    .and_then(|f| f.get("name"))
                    .is_some_and(Value::is_string)
                {
                    c.bad(format!("{at}/function/name"), "expected string");
                }
            }
        }
        Some(_) => c.bad("/tools", "expected array"),
    }
    c.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pointers(api: Provider, v: Value) -> Vec<String> {
        check(api, &v)
            .iter()
            .map(|v| v.pointer().to_owned())
            .collect()
    }

    #[test]
    fn classic_bad_inputs_have_their_pointers() {
        let ok = json!({"model":"m","messages":[{"role":"user","content":"hi"}]});
        assert!(pointers(Provider::OpenAi, ok).is_empty());
        assert_eq!(
            pointers(Provider::OpenAi, json!({"model":"m"})),
            ["/messages"]
        );
        assert_eq!(
            pointers(
                Provider::OpenAi,
                json!({"model":null,"messages":[{"role":"user","content":"x"}]})
            ),
            ["/model"]
        );
        assert_eq!(
            pointers(
                Provider::OpenAi,
                json!({"model":"m","temperature":3,"messages":[{"role":"wizard","content":7}]})
            ),
            ["/messages/0/role", "/messages/0/content", "/temperature"]
        );
        assert_eq!(
            pointers(
                Provider::Anthropic,
                json!({"model":"m","messages":[{"role":"system","content":"x"}]})
            ),
            ["/messages/0/role", "/max_tokens"]
        );
        assert_eq!(
            pointers(
                Provider::OpenAi,
                json!({"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function"}]})
            ),
            ["/tools/0/function/name"]
        );
    }
}
