//! The progress bar of a cycle over many credentials, drawn on stderr when — and only when —
//! stderr is a terminal. Logs share that stderr: [`Terminal`] is also the log writer, and it
//! wipes the bar before a log line and draws it again after, so neither garbles the other.
//! In a pipe, a file or a journal nothing but the log lines is ever written.

use crate::observe::Observe;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing_subscriber::fmt::MakeWriter;

/// Fewer refreshes than this finish too fast for a bar to help.
pub const MIN_TOTAL: usize = 10;

/// Redraws at most this often (the last one is always drawn).
const REDRAW_EVERY: Duration = Duration::from_millis(80);

/// Cells of the bar itself.
const BAR_WIDTH: usize = 30;

/// Erases the current terminal line and returns to its start.
const WIPE: &str = "\r\x1b[2K";

/// The bar of one cycle, as text: `refreshing [=========>          ]  37/120  31%  12s`.
pub fn render(done: usize, total: usize, elapsed: Duration) -> String {
    let total = total.max(1);
    let done = done.min(total);
    let filled = done * BAR_WIDTH / total;
    let mut bar = "=".repeat(filled);
    if filled < BAR_WIDTH {
        bar.push(if done == 0 { ' ' } else { '>' });
        bar.push_str(&" ".repeat(BAR_WIDTH - filled - 1));
    }
    format!(
        "refreshing [{bar}] {done:>width$}/{total}  {:>3}%  {}s",
        done * 100 / total,
        elapsed.as_secs(),
        width = total.to_string().len()
    )
}

struct Bar {
    total: usize,
    done: usize,
    started: Instant,
    drawn_at: Option<Instant>,
}

struct Line {
    sink: Box<dyn Write + Send>,
    bar: Option<Bar>,
}

impl Line {
    fn draw(&mut self, force: bool) {
        let Some(bar) = &mut self.bar else { return };
        if !force && bar.drawn_at.is_some_and(|t| t.elapsed() < REDRAW_EVERY) {
            return;
        }
        bar.drawn_at = Some(Instant::now());
        let text = render(bar.done, bar.total, bar.started.elapsed());
        // A terminal that went away is no reason to disturb a cycle.
        let _ = write!(self.sink, "{WIPE}{text}");
        let _ = self.sink.flush();
    }

    fn wipe(&mut self) {
        if self.bar.as_ref().is_some_and(|b| b.drawn_at.is_some()) {
            let _ = write!(self.sink, "{WIPE}");
        }
    }
}

/// stderr shared by log lines and the progress bar. Clone it freely: clones share the line.
#[derive(Clone)]
pub struct Terminal {
    line: Arc<Mutex<Line>>,
    enabled: bool,
}

impl fmt::Debug for Terminal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Terminal")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Terminal {
    /// The process's stderr; the bar is enabled only if it is a terminal that can erase a line
    /// (`TERM` is not `dumb`).
    pub fn stderr() -> Terminal {
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        Terminal::with_sink(
            Box::new(std::io::stderr()),
            std::io::stderr().is_terminal() && !dumb,
        )
    }

    /// A terminal over any sink; `enabled` says whether bars are drawn.
    pub fn with_sink(sink: Box<dyn Write + Send>, enabled: bool) -> Terminal {
        Terminal {
            line: Arc::new(Mutex::new(Line { sink, bar: None })),
            enabled,
        }
    }

    /// Whether bars are drawn.
    pub fn enabled(&self) -> bool {
        self.enabled
    }
}

impl Observe for Terminal {
    fn refreshes_started(&self, total: usize) {
        if !self.enabled || total < MIN_TOTAL {
            return;
        }
        if let Ok(mut line) = self.line.lock() {
            line.bar = Some(Bar {
                total,
                done: 0,
                started: Instant::now(),
                drawn_at: None,
            });
            line.draw(true);
        }
    }

    fn refresh_finished(&self) {
        if let Ok(mut line) = self.line.lock() {
            let last = match &mut line.bar {
                Some(bar) => {
                    bar.done += 1;
                    bar.done >= bar.total
                }
                None => return,
            };
            line.draw(last);
        }
    }

    fn refreshes_ended(&self) {
        if let Ok(mut line) = self.line.lock() {
            line.wipe();
            let _ = line.sink.flush();
            line.bar = None;
        }
    }
}

/// One log write: the bar is wiped first and drawn again after a complete line.
pub struct LogWriter {
    line: Arc<Mutex<Line>>,
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut line = self
            .line
            .lock()
            .map_err(|_| std::io::Error::other("terminal lock poisoned"))?;
        line.wipe();
        line.sink.write_all(buf)?;
        if buf.ends_with(b"\n") {
            line.draw(true);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.line.lock() {
            Ok(mut line) => line.sink.flush(),
            Err(_) => Ok(()),
        }
    }
}

impl<'a> MakeWriter<'a> for Terminal {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter {
            line: Arc::clone(&self.line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn the_bar_fills_in_proportion() {
        assert_eq!(
            render(0, 120, Duration::from_secs(0)),
            format!("refreshing [{}]   0/120    0%  0s", " ".repeat(30))
        );
        let half = render(60, 120, Duration::from_secs(7));
        assert!(
            half.starts_with(&format!("refreshing [{}>", "=".repeat(15))),
            "{half}"
        );
        assert!(half.ends_with(" 60/120   50%  7s"), "{half}");
        assert_eq!(
            render(120, 120, Duration::from_secs(9)),
            format!("refreshing [{}] 120/120  100%  9s", "=".repeat(30))
        );
    }

    #[test]
    fn log_lines_wipe_the_bar_and_the_end_clears_it() {
        let sink = Shared::default();
        let term = Terminal::with_sink(Box::new(sink.clone()), true);
        term.refreshes_started(20);
        let mut log = term.make_writer();
        log.write_all(b"{\"event\":\"credential.refreshed\"}\n")
            .unwrap();
        term.refresh_finished();
        term.refreshes_ended();
        let out = sink.text();
        // Bar, wipe, the log line on a clean line, the bar again, and a final wipe.
        assert!(out.starts_with(&format!("{WIPE}refreshing [")), "{out:?}");
        assert!(
            out.contains(&format!(
                "{WIPE}{{\"event\":\"credential.refreshed\"}}\n{WIPE}refreshing"
            )),
            "{out:?}"
        );
        assert!(out.ends_with(WIPE), "{out:?}");
    }

    #[test]
    fn nothing_but_log_lines_when_disabled_or_small() {
        for (enabled, total) in [(false, 500), (true, MIN_TOTAL - 1)] {
            let sink = Shared::default();
            let term = Terminal::with_sink(Box::new(sink.clone()), enabled);
            term.refreshes_started(total);
            term.make_writer().write_all(b"line\n").unwrap();
            for _ in 0..total {
                term.refresh_finished();
            }
            term.refreshes_ended();
            assert_eq!(sink.text(), "line\n");
        }
    }
}
