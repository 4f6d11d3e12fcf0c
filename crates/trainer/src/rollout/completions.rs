//! The OpenAI-compatible completions API as vLLM serves it (`POST /v1/completions` with
//! `return_token_ids`): the request for one prompt's group of samples, and the checks that
//! turn a response into completions the trainer can trust.

use anyhow::{Result, bail, ensure};
use serde::Deserialize;
use serde_json::{Value, json};

use tinylora::generate::Generation;

/// The sampling of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Completions for the prompt.
    pub n: usize,
    /// Most new tokens per completion.
    pub max_tokens: usize,
    /// Sampling temperature (RL samples the full distribution: no top-k, top-p or min-p).
    pub temperature: f32,
    /// Sampler seed.
    pub seed: u64,
}

/// The body of `POST /v1/completions` for `prompt` (token ids, never text) under the adapter
/// `model` (its LoRA name): the sampled tokens' log-probs, and token ids rather than text.
pub fn request(model: &str, prompt: &[u32], sampling: &Sampling) -> Value {
    json!({
        "model": model,
        "prompt": prompt,
        "n": sampling.n,
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": 1.0,
        "top_k": -1,
        "min_p": 0.0,
        "seed": sampling.seed,
        "logprobs": 0,
        "return_token_ids": true,
        "return_tokens_as_token_ids": true,
        "skip_special_tokens": false,
    })
}

#[derive(Deserialize)]
struct Response {
    model: String,
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    index: usize,
    finish_reason: Option<String>,
    prompt_token_ids: Option<Vec<u32>>,
    token_ids: Option<Vec<u32>>,
    logprobs: Option<Logprobs>,
}

#[derive(Deserialize)]
struct Logprobs {
    token_logprobs: Vec<Option<f32>>,
}

/// The completions of a response to [`request`], in `index` order, after checking that it is
/// the answer to that request: the adapter `model` asked for, the prompt's ids echoed, `n`
/// choices, one finite log-prob per token, a known `finish_reason`, "length" only at
/// `max_tokens`, and a stop token ending each stopped completion. `origin` names the server.
pub fn parse(
    body: &str,
    model: &str,
    prompt: &[u32],
    sampling: &Sampling,
    stop_tokens: &[u32],
    origin: &str,
) -> Result<Vec<Generation>> {
    let response: Response = serde_json::from_str(body).map_err(|e| {
        anyhow::anyhow!(
            "{origin}: not a completions response ({e}): {}",
            excerpt(body)
        )
    })?;
    ensure!(
        response.model == model,
        "{origin}: answered with adapter `{}` where `{model}` was asked for: a stale or \
         unloaded adapter would sample the wrong policy",
        response.model
    );
    ensure!(
        response.choices.len() == sampling.n,
        "{origin}: {} choices for n = {}",
        response.choices.len(),
        sampling.n
    );
    let mut choices = response.choices;
    choices.sort_by_key(|c| c.index);
    let mut out = Vec::with_capacity(choices.len());
    for (i, choice) in choices.into_iter().enumerate() {
        let at = format!("{origin}: choice {i}");
        ensure!(choice.index == i, "{at}: indices are not 0..n");
        match &choice.prompt_token_ids {
            Some(echo) if echo == prompt => {}
            Some(echo) => bail!(
                "{at}: the prompt came back as {} token ids that differ from the {} sent",
                echo.len(),
                prompt.len()
            ),
            None => bail!(
                "{at}: no prompt_token_ids: start vLLM ≥ 0.10.2, which honours return_token_ids"
            ),
        }
        let tokens = choice
            .token_ids
            .ok_or_else(|| anyhow::anyhow!("{at}: no token_ids (return_token_ids unsupported?)"))?;
        let logprobs = choice
            .logprobs
            .ok_or_else(|| anyhow::anyhow!("{at}: no logprobs"))?
            .token_logprobs;
        ensure!(
            logprobs.len() == tokens.len(),
            "{at}: {} log-probs for {} tokens",
            logprobs.len(),
            tokens.len()
        );
        let logprobs = logprobs
            .into_iter()
            .enumerate()
            .map(|(t, lp)| match lp {
                Some(x) if x.is_finite() && x <= 0.0 => Ok(x),
                other => bail!("{at}, token {t}: log-prob {other:?} is not a finite value ≤ 0"),
            })
            .collect::<Result<Vec<f32>>>()?;
        let stopped = match choice.finish_reason.as_deref() {
            Some("stop") => {
                ensure!(
                    tokens.last().is_some_and(|t| stop_tokens.contains(t)),
                    "{at}: finish_reason \"stop\" but the last token is not a stop token \
                     ({stop_tokens:?}): start the server so that it keeps stop tokens in token_ids"
                );
                true
            }
            Some("length") => {
                ensure!(
                    tokens.len() == sampling.max_tokens,
                    "{at}: finish_reason \"length\" after {} of {} tokens",
                    tokens.len(),
                    sampling.max_tokens
                );
                false
            }
            other => bail!("{at}: finish_reason {other:?} (expected \"stop\" or \"length\")"),
        };
        ensure!(
            tokens.len() <= sampling.max_tokens,
            "{at}: {} tokens, more than max_tokens = {}",
            tokens.len(),
            sampling.max_tokens
        );
        out.push(Generation {
            tokens,
            logprobs,
            stopped,
        });
    }
    Ok(out)
}

/// The start of `body`, for error messages.
fn excerpt(body: &str) -> String {
    body.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A response shaped as vLLM (≥ 0.10.2) answers `request` with `return_token_ids` and
    /// `return_tokens_as_token_ids`: two choices, one stopped by token 7, one at the limit.
    const RESPONSE: &str = r#"{
      "id": "cmpl-5b1f", "object": "text_completion", "created": 1764800000, "model": "step-3",
      "choices": [
        {"index": 1, "text": "ab", "logprobs": {"text_offset": [0, 1, 2],
          "token_logprobs": [-0.5, -1.25, -3.0], "tokens": ["token_id:4", "token_id:5", "token_id:6"],
          "top_logprobs": [{"token_id:4": -0.5}, {"token_id:5": -1.25}, {"token_id:6": -3.0}]},
         "finish_reason": "length", "stop_reason": null, "prompt_logprobs": null,
         "prompt_token_ids": [1, 2], "token_ids": [4, 5, 6]},
        {"index": 0, "text": "c", "logprobs": {"text_offset": [0, 1],
          "token_logprobs": [-0.125, -0.0], "tokens": ["token_id:3", "token_id:7"],
          "top_logprobs": [{"token_id:3": -0.125}, {"token_id:7": -0.0}]},
         "finish_reason": "stop", "stop_reason": null, "prompt_logprobs": null,
         "prompt_token_ids": [1, 2], "token_ids": [3, 7]}
      ],
      "service_tier": null, "system_fingerprint": null,
      "usage": {"prompt_tokens": 4, "total_tokens": 9, "completion_tokens": 5,
                "prompt_tokens_details": null},
      "kv_transfer_params": null
    }"#;

    const SAMPLING: Sampling = Sampling {
        n: 2,
        max_tokens: 3,
        temperature: 1.0,
        seed: 9,
    };

    fn parsed(body: &str) -> Result<Vec<Generation>> {
        parse(body, "step-3", &[1, 2], &SAMPLING, &[7], "http://server")
    }

    #[test]
    fn a_vllm_response_in_index_order() {
        let got = parsed(RESPONSE).unwrap();
        assert_eq!(
            got,
            vec![
                Generation {
                    tokens: vec![3, 7],
                    logprobs: vec![-0.125, 0.0],
                    stopped: true
                },
                Generation {
                    tokens: vec![4, 5, 6],
                    logprobs: vec![-0.5, -1.25, -3.0],
                    stopped: false
                },
            ]
        );
        let body = request("step-3", &[1, 2], &SAMPLING);
        for (key, want) in [
            ("model", json!("step-3")),
            ("prompt", json!([1, 2])),
            ("n", json!(2)),
            ("top_k", json!(-1)),
            ("logprobs", json!(0)),
            ("return_token_ids", json!(true)),
        ] {
            assert_eq!(body[key], want, "{key}");
        }
    }

    #[test]
    fn responses_that_cannot_be_trusted_are_errors() {
        let cases = [
            (r#""model": "step-3""#, r#""model": "step-2""#, "stale"),
            (
                r#""prompt_token_ids": [1, 2], "token_ids": [3"#,
                r#""prompt_token_ids": [1, 9], "token_ids": [3"#,
                "differ from the 2 sent",
            ),
            (
                r#""token_ids": [3, 7]"#,
                r#""token_ids": [7]"#,
                "2 log-probs for 1 tokens",
            ),
            (
                r#""finish_reason": "stop""#,
                r#""finish_reason": "abort""#,
                "finish_reason",
            ),
            (r#""token_ids": [4, 5, 6]"#, r#""token_ids": [4, 5, 7]"#, ""),
            (
                r#""finish_reason": "length""#,
                r#""finish_reason": "stop""#,
                "not a stop token",
            ),
            (
                r#"[-0.125, -0.0]"#,
                r#"[-0.125, null]"#,
                "not a finite value",
            ),
            (r#"{"index": 1,"#, r#"{"index": 0,"#, "indices"),
        ];
        for (from, to, want) in cases {
            assert!(RESPONSE.contains(from), "{from}");
            let result = parsed(&RESPONSE.replacen(from, to, 1));
            if want.is_empty() {
                // A stop token inside a length-limited completion is the engine's business.
                assert!(result.is_ok());
                continue;
            }
            let err = format!("{:#}", result.unwrap_err());
            assert!(
                err.contains(want) && err.contains("http://server"),
                "{to}: {err}"
            );
        }
        let err = format!("{:#}", parsed("{\"error\": 1}").unwrap_err());
        assert!(err.contains("not a completions response"), "{err}");
        let short = Sampling { n: 3, ..SAMPLING };
        let err = parse(RESPONSE, "step-3", &[1, 2], &short, &[7], "s").unwrap_err();
        assert!(err.to_string().contains("2 choices for n = 3"));
    }
}
