//! The status line `register` shows on stderr while it waits: built from the provisioning
//! client's `tracing` events (`register`, `connect`, `dps response`, `poll`, `retrying`,
//! `challenge`, ...), which carry no secrets.
//!
//! On a terminal the line is redrawn in place; otherwise each new status is one line.

use std::fmt::Debug;
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// The shared status line.
#[derive(Clone, Debug)]
pub(crate) struct Status {
    inner: Arc<Mutex<Line>>,
}

#[derive(Debug)]
struct Line {
    enabled: bool,
    tty: bool,
    /// Whether something is drawn on a terminal that must be cleared.
    drawn: bool,
    last: String,
    polls: u32,
    started: Instant,
    /// Columns the line may use on a terminal.
    width: usize,
}

impl Status {
    /// A status line on stderr; `enabled = false` prints nothing.
    pub(crate) fn new(enabled: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        let status = Self {
            inner: Arc::new(Mutex::new(Line {
                enabled,
                tty,
                drawn: false,
                last: String::new(),
                polls: 0,
                started: Instant::now(),
                width: terminal_width(),
            })),
        };
        if enabled && tty {
            // Keeps the elapsed time ticking during long waits (Retry-After, backoff). The
            // thread ends with the process.
            let line = Arc::downgrade(&status.inner);
            let _ = std::thread::Builder::new()
                .name("status line".into())
                .spawn(move || {
                    while let Some(line) = line.upgrade() {
                        {
                            let mut line = line.lock().unwrap_or_else(|e| e.into_inner());
                            if line.drawn {
                                line.draw();
                            }
                        }
                        drop(line);
                        std::thread::sleep(std::time::Duration::from_millis(250));
                    }
                });
        }
        status
    }

    /// Shows `text` (prefixed with `registering... `).
    pub(crate) fn show(&self, text: &str) {
        let mut line = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        line.show(text);
    }

    /// Clears the line (before the result or an error is printed).
    pub(crate) fn clear(&self) {
        let mut line = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if line.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            line.drawn = false;
        }
    }

    /// The `tracing` layer that feeds this line.
    pub(crate) fn layer(&self) -> StatusLayer {
        StatusLayer {
            status: self.clone(),
        }
    }

    fn on_event(&self, fields: &Fields) {
        let mut line = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let text = match fields.message.as_str() {
            "register" => format!(
                "sending the registration of '{}'",
                fields.get("registration_id")
            ),
            "connect" | "connect (MQTT)" => format!(
                "connecting to {}:{}",
                fields.get("host"),
                fields.get("port")
            ),
            "dps response" if fields.get("status") == "202" => {
                "accepted, waiting for the assignment".to_owned()
            }
            "dps response" if fields.get("status") == "401" && line.polls == 0 => {
                "answered 401 (a TPM challenge, or refused)".to_owned()
            }
            "challenge: activating the TPM identity key" => {
                "TPM challenge: activating the identity key in the TPM".to_owned()
            }
            "poll" => {
                line.polls += 1;
                format!("polling ({})", line.polls)
            }
            "retrying" => format!(
                "retrying the {} request in {} (attempt {}: {})",
                fields.get("operation"),
                tidy_duration(fields.get("wait")),
                fields.get("attempt"),
                fields.get("error"),
            ),
            "importing the hub device key into the TPM" => {
                "importing the hub device key into the TPM".to_owned()
            }
            _ => return,
        };
        line.show(&text);
    }
}

impl Line {
    fn show(&mut self, text: &str) {
        if !self.enabled || text == self.last {
            return;
        }
        text.clone_into(&mut self.last);
        if self.tty {
            self.draw();
        } else {
            let _ = writeln!(std::io::stderr(), "{}", self.render());
        }
    }

    fn render(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        format!("registering... [{elapsed:.1}s] {}", self.last)
    }

    /// Redraws the line in place, cut to the terminal's width so that it never wraps.
    fn draw(&mut self) {
        let mut rendered = self.render();
        if rendered.chars().count() >= self.width {
            rendered = rendered
                .chars()
                .take(self.width.saturating_sub(2))
                .collect();
            rendered.push('…');
        }
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K{rendered}");
        let _ = stderr.flush();
        self.drawn = true;
    }
}

/// `$COLUMNS`, else 80.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c| c >= 20)
        .unwrap_or(80)
}

/// `403.989871ms` -> `404ms`, `1.918063209s` -> `1.9s` (a `Duration`'s `Debug`).
fn tidy_duration(text: &str) -> String {
    let parsed = |suffix: &str| text.strip_suffix(suffix)?.parse::<f64>().ok();
    if let Some(ms) = parsed("ms") {
        format!("{ms:.0}ms")
    } else if let Some(s) = parsed("s") {
        format!("{s:.1}s")
    } else {
        text.to_owned()
    }
}

/// Feeds [`Status`] from the provisioning client's events.
#[derive(Debug)]
pub(crate) struct StatusLayer {
    status: Status,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StatusLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if !event.metadata().target().starts_with("provisioning") {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.status.on_event(&fields);
    }
}

/// An event's message and fields, as text.
#[derive(Debug, Default)]
struct Fields {
    message: String,
    values: Vec<(&'static str, String)>,
}

impl Fields {
    fn get(&self, name: &str) -> &str {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("?", |(_, v)| v.as_str())
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.values.push((field.name(), value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.values.push((field.name(), text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_status_text() {
        let status = Status::new(false);
        let mut fields = Fields {
            message: "poll".into(),
            values: Vec::new(),
        };
        status.on_event(&fields);
        status.on_event(&fields);
        assert_eq!(
            status.inner.lock().unwrap().polls,
            2,
            "each poll event counts"
        );
        fields.message = "retrying".into();
        fields.values = vec![("operation", "register".into()), ("attempt", "1".into())];
        assert_eq!(fields.get("operation"), "register");
        assert_eq!(fields.get("wait"), "?");
        assert_eq!(tidy_duration("403.989871ms"), "404ms");
        assert_eq!(tidy_duration("1.918063209s"), "1.9s");
        assert_eq!(tidy_duration("2s"), "2.0s");
        assert_eq!(tidy_duration("?"), "?");
    }
}
