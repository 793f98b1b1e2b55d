//! Structured logs: one JSON object a line (journald-friendly) or a pretty
//! human format. The filter comes from `$SYNTHD_LOG` (tracing's
//! `EnvFilter` syntax), default `info`.

use crate::config::LogFormat;

/// Where log lines go: the daemon writes to stdout (journald); one-shot
/// commands write to stderr so their own output on stdout stays clean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Stdout,
    Stderr,
}

pub fn init(format: LogFormat, target: Target, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SYNTHD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = match (format, target) {
        (LogFormat::Json, Target::Stdout) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stdout)
            .try_init(),
        (LogFormat::Json, Target::Stderr) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .try_init(),
        (LogFormat::Pretty, Target::Stdout) => builder.with_writer(std::io::stdout).try_init(),
        (LogFormat::Pretty, Target::Stderr) => builder.with_writer(std::io::stderr).try_init(),
    };
    // Already initialised (tests running several commands in one process).
    let _ = result;
}
