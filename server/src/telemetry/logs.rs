//! The server's log lines: plain text, or JSON lines (`--log-json`) in which every line
//! carries the span it was written in (`span`) and every span around it (`spans`, outermost
//! first), so a line written during a step names its rollout and its step.

use tracing::Subscriber;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::{SubscriberInitExt, TryInitError};
use tracing_subscriber::{EnvFilter, Layer};

/// The JSON-lines layer writing to `writer`: each event with its current span and the list
/// of spans it is in.
pub fn json_layer<S, W>(writer: W) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(writer)
}

/// Installs the process's logging on stdout, as text or JSON lines, filtered by `RUST_LOG`
/// (default `info`).
pub fn init(json: bool) -> Result<(), TryInitError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        registry.with(json_layer(std::io::stdout)).try_init()
    } else {
        registry.with(tracing_subscriber::fmt::layer()).try_init()
    }
}

/// Log lines kept in memory, for tests that read what was logged.
#[cfg(test)]
pub(crate) mod capture {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing::Subscriber;
    use tracing::level_filters::LevelFilter;
    use tracing_subscriber::fmt::MakeWriter;
    use tracing_subscriber::layer::SubscriberExt;

    /// Where the captured lines go.
    #[derive(Clone, Default)]
    pub struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        /// Every line written so far, each read as JSON.
        pub fn lines(&self) -> Vec<serde_json::Value> {
            let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
            String::from_utf8_lossy(&bytes)
                .lines()
                .map(|line| serde_json::from_str(line).expect("a JSON log line"))
                .collect()
        }
    }

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Ok(mut bytes) = self.0.lock() {
                bytes.extend_from_slice(buf);
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// A span's name and the name of the span it was opened in.
    pub type Opened = (String, Option<String>);

    /// Every span opened, by name, with the name of the span it was opened in.
    #[derive(Clone, Default)]
    pub struct Parents(Arc<Mutex<Vec<Opened>>>);

    impl Parents {
        /// The (span, parent) pairs seen so far, in the order opened.
        pub fn seen(&self) -> Vec<Opened> {
            self.0.lock().map(|p| p.clone()).unwrap_or_default()
        }
    }

    impl<S> tracing_subscriber::Layer<S> for Parents
    where
        S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            _: &tracing::span::Attributes<'_>,
            id: &tracing::span::Id,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let Some(span) = ctx.span(id) else { return };
            let parent = span.parent().map(|p| p.name().to_owned());
            if let Ok(mut seen) = self.0.lock() {
                seen.push((span.name().to_owned(), parent));
            }
        }
    }

    /// Records the parent of every span opened (at every level) in `parents`.
    pub fn parents(parents: &Parents) -> impl Subscriber + Send + Sync {
        tracing_subscriber::registry().with(parents.clone())
    }

    /// The server's JSON lines at `level` and above, written to `captured`.
    pub fn json(captured: &Captured, level: LevelFilter) -> impl Subscriber + Send + Sync {
        tracing_subscriber::registry()
            .with(level)
            .with(super::json_layer(captured.clone()))
    }
}
