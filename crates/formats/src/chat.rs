//! Chat templates, as text (the tokenizer turns it into ids): the model's own Jinja template
//! (`chat_template` in `tokenizer_config.json`, or `tokenizer.chat_template` in a GGUF file),
//! rendered as transformers' `apply_chat_template` renders it, or Qwen2.5's for models that
//! have none.

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, context};

use crate::{Error, Result};

/// Qwen2.5's default system prompt (its chat template inserts it when none is given).
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// The Qwen2.5 chat template for one user turn, ending where the assistant starts to speak.
pub fn chat_prompt(system: Option<&str>, user: &str) -> String {
    let system = system.unwrap_or(DEFAULT_SYSTEM_PROMPT);
    format!(
        "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )
}

/// How a model turns a conversation into text.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ChatTemplate {
    /// Qwen2.5's template ([`chat_prompt`]): for models without a template of their own.
    #[default]
    Qwen25,
    /// A Jinja template from the model's files.
    Jinja {
        /// The template's source.
        source: String,
        /// The text of the beginning-of-sequence token (`bos_token` in the template).
        bos_token: String,
        /// The text of the end-of-sequence token (`eos_token` in the template).
        eos_token: String,
        /// The file it came from, for errors.
        origin: PathBuf,
    },
}

/// The Jinja environment of transformers' `apply_chat_template`: blocks trimmed and stripped,
/// Python's string and dict methods, `raise_exception`. Templates see no clock
/// (`strftime_now` is undefined), so a prompt is the same on every day and machine.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |message: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        },
    );
    env
}

impl ChatTemplate {
    /// A Jinja template; an error naming `origin` when it does not parse.
    pub fn jinja(
        source: String,
        bos_token: String,
        eos_token: String,
        origin: &Path,
    ) -> Result<Self> {
        environment()
            .template_from_str(&source)
            .map_err(|e| Error::BadFile {
                path: origin.to_path_buf(),
                reason: format!("the chat template does not parse: {e}"),
            })?;
        Ok(Self::Jinja {
            source,
            bos_token,
            eos_token,
            origin: origin.to_path_buf(),
        })
    }

    /// The template of a `tokenizer_config.json` (its `chat_template`: a string, or a list of
    /// named templates of which `default` is taken); `None` when it has none.
    pub fn from_tokenizer_config(text: &str, origin: &Path) -> Result<Option<Self>> {
        let bad = |reason: String| Error::BadFile {
            path: origin.to_path_buf(),
            reason,
        };
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let source = match json.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str())
                .ok_or_else(|| bad("chat_template lists no template named `default`".into()))?
                .to_string(),
            Some(other) => {
                return Err(bad(format!(
                    "chat_template must be a string or a list of named templates, got {other}"
                )));
            }
        };
        // Special tokens are written either as text or as {"content": text, ...}.
        let token = |key: &str| match json.get(key) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(t) => t
                .get("content")
                .and_then(|c| c.as_str())
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        };
        Self::jinja(source, token("bos_token"), token("eos_token"), origin).map(Some)
    }

    /// One user turn (after `system`, if given) and the start of the assistant's reply.
    pub fn render(&self, system: Option<&str>, user: &str) -> Result<String> {
        let Self::Jinja {
            source,
            bos_token,
            eos_token,
            origin,
        } = self
        else {
            return Ok(chat_prompt(system, user));
        };
        let mut messages = Vec::new();
        if let Some(system) = system {
            messages.push(context! { role => "system", content => system });
        }
        messages.push(context! { role => "user", content => user });
        let env = environment();
        let rendered = env.template_from_str(source).and_then(|t| {
            t.render(context! {
                messages,
                add_generation_prompt => true,
                bos_token,
                eos_token,
            })
        });
        rendered.map_err(|e| Error::BadFile {
            path: origin.clone(),
            reason: format!("the chat template failed: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_template_matches_qwen25() {
        assert_eq!(
            chat_prompt(None, "What is 12*7?"),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
             <|im_start|>user\nWhat is 12*7?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn tokenizer_configs_give_their_template_or_none() {
        let origin = Path::new("tokenizer_config.json");
        let config = r#"{"bos_token": "<s>", "eos_token": {"content": "</s>"},
            "chat_template": "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content.strip() }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"}"#;
        let template = ChatTemplate::from_tokenizer_config(config, origin)
            .unwrap()
            .unwrap();
        assert_eq!(
            template.render(Some("Be brief."), " Hi ").unwrap(),
            "<s>[system] Be brief.[user] Hi[assistant]"
        );
        assert_eq!(
            ChatTemplate::from_tokenizer_config("{}", origin).unwrap(),
            None
        );
        let err = ChatTemplate::from_tokenizer_config(r#"{"chat_template": "{% if %}"}"#, origin)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("tokenizer_config.json: the chat template does not parse"),
            "{err}"
        );
        let raising = r#"{"chat_template": "{{ raise_exception('no system role') }}"}"#;
        let err = ChatTemplate::from_tokenizer_config(raising, origin)
            .unwrap()
            .unwrap()
            .render(None, "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no system role"), "{err}");
    }
}
