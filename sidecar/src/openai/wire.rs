//! The OpenAI API's JSON, as the front end reads and writes it: the
//! request fields it needs (everything else goes to the guest as it came),
//! what the guest answers at the end, the objects a completion is framed
//! in (`chat.completion`, `chat.completion.chunk`, `text_completion`) and
//! the error shape. Pure.

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Which completion a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Completion,
}

/// The request fields the front end reads.
#[derive(Debug, Deserialize)]
pub(crate) struct Request {
    pub(crate) model: String,
    #[serde(default)]
    pub(crate) stream: bool,
    #[serde(default)]
    pub(crate) stream_options: Option<StreamOptions>,
    /// Chat: the conversation (checked present; the guest reads it).
    #[serde(default)]
    pub(crate) messages: Option<Vec<Value>>,
    /// Completion: the prompt (checked present; the guest reads it).
    #[serde(default)]
    pub(crate) prompt: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: bool,
}

impl Request {
    /// Checks what the endpoint needs: `(message, param)` when it is not
    /// there.
    pub(crate) fn check(&self, endpoint: Endpoint) -> Result<(), (String, &'static str)> {
        match endpoint {
            Endpoint::Chat if self.messages.as_ref().is_none_or(Vec::is_empty) => {
                Err(("messages must be a non-empty array".into(), "messages"))
            }
            Endpoint::Completion if self.prompt.is_none() => {
                Err(("a prompt is required".into(), "prompt"))
            }
            _ => Ok(()),
        }
    }
}

/// Token counts, as the guest reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
}

impl Usage {
    fn json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        })
    }
}

/// What the guest returns when it has emitted its text:
/// `{"finish_reason": "stop" | "length", "usage": {"prompt_tokens",
/// "completion_tokens"}}`; either may be left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct GuestEnd {
    #[serde(default)]
    pub(crate) finish_reason: Option<String>,
    #[serde(default)]
    pub(crate) usage: Option<Usage>,
}

impl GuestEnd {
    /// The guest's returned bytes read as its end (bytes that are not such
    /// JSON give the defaults: `stop`, no usage).
    pub(crate) fn parse(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    fn finish_reason(&self) -> &str {
        self.finish_reason.as_deref().unwrap_or("stop")
    }
}

/// What every object of one completion shares.
#[derive(Debug, Clone)]
pub(crate) struct Framing {
    pub(crate) endpoint: Endpoint,
    /// `chatcmpl-…` or `cmpl-…`, from the job id.
    pub(crate) id: String,
    /// Unix seconds when the request was accepted.
    pub(crate) created: u64,
    pub(crate) model: String,
}

impl Framing {
    pub(crate) fn new(endpoint: Endpoint, job: &str, created: u64, model: String) -> Self {
        let prefix = match endpoint {
            Endpoint::Chat => "chatcmpl",
            Endpoint::Completion => "cmpl",
        };
        Self {
            endpoint,
            id: format!("{prefix}-{job}"),
            created,
            model,
        }
    }

    fn object(&self, streamed: bool) -> &'static str {
        match (self.endpoint, streamed) {
            (Endpoint::Chat, true) => "chat.completion.chunk",
            (Endpoint::Chat, false) => "chat.completion",
            (Endpoint::Completion, _) => "text_completion",
        }
    }

    /// A streamed object with `choices`.
    fn chunk(&self, choices: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": choices,
        })
    }

    /// The first streamed chat object: the assistant's role.
    pub(crate) fn role(&self) -> Option<Value> {
        (self.endpoint == Endpoint::Chat).then(|| {
            self.chunk(json!([{
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": null,
            }]))
        })
    }

    /// A streamed piece of text.
    pub(crate) fn piece(&self, text: &str) -> Value {
        self.chunk(match self.endpoint {
            Endpoint::Chat => json!([{
                "index": 0, "delta": {"content": text}, "finish_reason": null,
            }]),
            Endpoint::Completion => json!([{
                "index": 0, "text": text, "logprobs": null, "finish_reason": null,
            }]),
        })
    }

    /// The last streamed objects: the finish reason, then (when asked for)
    /// the usage with no choices.
    pub(crate) fn finish(&self, end: &GuestEnd, include_usage: bool) -> Vec<Value> {
        let reason = end.finish_reason();
        let mut last = vec![self.chunk(match self.endpoint {
            Endpoint::Chat => json!([{"index": 0, "delta": {}, "finish_reason": reason}]),
            Endpoint::Completion => json!([{
                "index": 0, "text": "", "logprobs": null, "finish_reason": reason,
            }]),
        })];
        if include_usage {
            let mut usage = self.chunk(json!([]));
            usage["usage"] = end.usage.map_or(Value::Null, Usage::json);
            last.push(usage);
        }
        last
    }

    /// A whole (unstreamed) answer.
    pub(crate) fn whole(&self, text: &str, end: &GuestEnd) -> Value {
        let reason = end.finish_reason();
        let choice = match self.endpoint {
            Endpoint::Chat => json!({
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": null,
                "finish_reason": reason,
            }),
            Endpoint::Completion => json!({
                "index": 0, "text": text, "logprobs": null, "finish_reason": reason,
            }),
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": end.usage.map_or(Value::Null, Usage::json),
        })
    }
}

/// The error `type` OpenAI's clients expect for a status.
pub(crate) fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}

/// `{"error": {"message", "type", "param", "code"}}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str, param: Option<&str>) -> Value {
    json!({
        "error": {
            "message": message,
            "type": error_type(status),
            "param": param,
            "code": code,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(endpoint: Endpoint) -> Framing {
        Framing::new(endpoint, "ab12", 1_700_000_000, "tiny-lm".into())
    }

    #[test]
    fn chat_is_framed_as_openai_frames_it() {
        let f = framing(Endpoint::Chat);
        assert_eq!(
            f.role().unwrap()["choices"][0]["delta"]["role"],
            "assistant"
        );
        let piece = f.piece("hi");
        assert_eq!(piece["id"], "chatcmpl-ab12");
        assert_eq!(piece["object"], "chat.completion.chunk");
        assert_eq!(piece["choices"][0]["delta"]["content"], "hi");
        assert_eq!(piece["choices"][0]["finish_reason"], Value::Null);
        let end = GuestEnd::parse(
            br#"{"finish_reason":"length","usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        );
        let last = f.finish(&end, true);
        assert_eq!(last[0]["choices"][0]["finish_reason"], "length");
        assert_eq!(last[1]["choices"], json!([]));
        assert_eq!(last[1]["usage"]["total_tokens"], 7);
        let whole = f.whole("hi there", &end);
        assert_eq!(whole["object"], "chat.completion");
        assert_eq!(whole["choices"][0]["message"]["content"], "hi there");
        assert_eq!(whole["usage"]["prompt_tokens"], 3);
        assert_eq!(f.finish(&end, false).len(), 1);
    }

    #[test]
    fn completions_carry_text_and_the_guests_end_has_defaults() {
        let f = framing(Endpoint::Completion);
        assert!(f.role().is_none());
        let piece = f.piece("x");
        assert_eq!(
            (&piece["object"], &piece["choices"][0]["text"]),
            (&json!("text_completion"), &json!("x"))
        );
        let end = GuestEnd::parse(b"not json");
        assert_eq!(end, GuestEnd::default());
        let whole = f.whole("xy", &end);
        assert_eq!(whole["id"], "cmpl-ab12");
        assert_eq!(whole["choices"][0]["finish_reason"], "stop");
        assert_eq!(whole["usage"], Value::Null);
    }

    #[test]
    fn requests_are_checked_for_what_their_endpoint_needs() {
        let r: Request = serde_json::from_value(json!({"model": "m", "messages": []})).unwrap();
        assert_eq!(r.check(Endpoint::Chat).unwrap_err().1, "messages");
        let r: Request =
            serde_json::from_value(json!({"model": "m", "prompt": "p", "stream": true})).unwrap();
        assert!(r.check(Endpoint::Completion).is_ok() && r.stream);
        assert_eq!(r.check(Endpoint::Chat).unwrap_err().1, "messages");
        for (status, kind) in [
            (401, "authentication_error"),
            (404, "not_found_error"),
            (422, "invalid_request_error"),
            (503, "server_error"),
        ] {
            assert_eq!(error_type(StatusCode::from_u16(status).unwrap()), kind);
        }
        let e = error(
            StatusCode::NOT_FOUND,
            "model_not_found",
            "no model",
            Some("model"),
        );
        assert_eq!(e["error"]["param"], "model");
    }
}
