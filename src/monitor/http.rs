//! The monitor's HTTP client (STAC API search, alert webhooks): only the URLs the config
//! names, a timeout, no proxy taken from the environment, and tokens never in messages.

use serde_json::Value;
use std::time::Duration;

/// One request; the answer's body, or the reason it failed (HTTP status and the start of
/// the body, or the transport error).
pub fn request(
    method: &str,
    url: &str,
    body: Option<&Value>,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<String, String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .try_proxy_from_env(false)
        .build();
    let mut req = agent.request(method, url);
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match body {
        Some(b) if method != "GET" && !b.is_null() => req
            .set("Content-Type", "application/json")
            .send_string(&b.to_string()),
        _ => req.call(),
    };
    match resp {
        Ok(r) => r.into_string().map_err(|e| e.to_string()),
        Err(ureq::Error::Status(code, r)) => {
            let text: String = r
                .into_string()
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            Err(format!("HTTP {code}: {text}"))
        }
        Err(e) => Err(e.to_string()),
    }
}
