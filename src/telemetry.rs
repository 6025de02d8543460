//! Logging: one `tracing` subscriber for the process, text or JSON.

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG` wins over `log.level`. A second
/// call (several nodes in one test process) keeps the first.
pub fn init(settings: &LogSettings) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    // webrtc-sdp writes one line per unknown SDP attribute (7 000 for one
    // crafted offer); `domain::sdp` logs one summary instead.
    if !filter.to_string().contains("webrtc_sdp") {
        filter = filter.add_directive("webrtc_sdp=off".parse().expect("a valid directive"));
    }
    // actix-http writes an ERROR line for every malformed request a client
    // sends ("stream error: request parse error"): anyone could fill the log.
    if !filter.to_string().contains("actix_http") {
        filter = filter.add_directive("actix_http::h1::dispatcher=off".parse().expect("a valid directive"));
    }
    let builder = fmt().with_env_filter(filter).with_target(false);
    let _ = match settings.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
