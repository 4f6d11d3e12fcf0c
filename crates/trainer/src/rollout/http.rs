//! One inference server over plain HTTP (JSON in, JSON out), with the server's own words in
//! every error.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

/// A server answering on `url`.
pub struct Server {
    /// Its base URL, without a trailing `/`.
    pub url: String,
    agent: ureq::Agent,
}

impl Server {
    /// A server at `url` (`http://host:port`).
    pub fn new(url: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(3600)))
            .build();
        Self {
            url: url.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// `POST {url}{path}` with `body`: the response body, or an error with the server's words.
    pub fn post(&self, path: &str, body: &Value) -> Result<String> {
        let url = format!("{}{path}", self.url);
        let response = self.agent.post(&url).send_json(body);
        Self::text(&url, response)
    }

    /// `GET {url}{path}`: the response body, or an error with the server's words.
    pub fn get(&self, path: &str) -> Result<String> {
        let url = format!("{}{path}", self.url);
        let response = self.agent.get(&url).call();
        Self::text(&url, response)
    }

    fn text(
        url: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<String> {
        let mut response = response.with_context(|| format!("{url}: no answer"))?;
        let status = response.status();
        let text = response
            .body_mut()
            .with_config()
            .limit(256 << 20)
            .read_to_string()
            .with_context(|| format!("{url}: reading the answer"))?;
        ensure!(
            status.is_success(),
            "{url}: HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        );
        Ok(text)
    }
}
