//! Logging for the binaries: text with colour on a terminal, JSON lines otherwise (files, pipes,
//! log collectors), or as `LOG_FORMAT` says. Logs go to standard error; colour never goes
//! anywhere but a terminal.

use std::io::IsTerminal;

/// The environment variable choosing the log format: `json`, `text` or `auto` (the default:
/// JSON unless standard error is a terminal).
pub const LOG_FORMAT_VAR: &str = "LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, coloured only when `ansi`.
    Text { ansi: bool },
    /// One JSON object per line, event fields at the top level.
    Json,
}

/// A `LOG_FORMAT` value that is none of `json`, `text`, `auto`.
#[derive(Debug, thiserror::Error)]
#[error("{LOG_FORMAT_VAR}={0:?}: expected json, text or auto")]
pub struct UnknownLogFormat(String);

/// The format for a `LOG_FORMAT` value (`None`: unset) when standard error is (or is not) a
/// terminal.
pub fn choose(setting: Option<&str>, terminal: bool) -> Result<LogFormat, UnknownLogFormat> {
    match setting.map(str::trim) {
        None | Some("") | Some("auto") if terminal => Ok(LogFormat::Text { ansi: true }),
        None | Some("") | Some("auto") | Some("json") => Ok(LogFormat::Json),
        Some("text") => Ok(LogFormat::Text { ansi: terminal }),
        Some(other) => Err(UnknownLogFormat(other.to_string())),
    }
}

/// Installs the global subscriber: `RUST_LOG` filters (else `default_filter`), the format from
/// `LOG_FORMAT` and whether standard error is a terminal.
pub fn init(default_filter: &str) -> anyhow::Result<()> {
    let setting = std::env::var(LOG_FORMAT_VAR).ok();
    let format = choose(setting.as_deref(), std::io::stderr().is_terminal())?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text { ansi } => builder.with_ansi(ansi).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_unless_a_terminal_colour_only_on_one() {
        assert_eq!(
            choose(None, true).ok(),
            Some(LogFormat::Text { ansi: true })
        );
        assert_eq!(choose(None, false).ok(), Some(LogFormat::Json));
        assert_eq!(choose(Some("auto"), false).ok(), Some(LogFormat::Json));
        assert_eq!(choose(Some("json"), true).ok(), Some(LogFormat::Json));
        assert_eq!(
            choose(Some("text"), false).ok(),
            Some(LogFormat::Text { ansi: false })
        );
        assert_eq!(
            choose(Some("text"), true).ok(),
            Some(LogFormat::Text { ansi: true })
        );
        let refused = choose(Some("yaml"), false).expect_err("refused");
        assert!(refused.to_string().contains("LOG_FORMAT"), "{refused}");
    }
}
