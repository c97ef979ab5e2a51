//! A job's guest log: what its guest writes through `job.log`, stdout and
//! stderr, cut into lines, escaped and held to a per-job budget.
//!
//! ```text
//!  job.log(level, msg) ─┐
//!  wasi stdout bytes ───┼─▶ GuestLog::{message, write, finish} ─▶ Vec<LogLine> ─▶ tracing (target "guest", job = …)
//!  wasi stderr bytes ───┘        (pure: budget, escaping, line assembly)
//! ```
//!
//! The core is pure: it takes text and returns the lines to emit, so the
//! rules are table-tested without a subscriber. [`SharedLog`] is the thin
//! shell the host functions and the WASI output streams write through.
//!
//! Rules:
//! - A `job.log` message is one line whatever it holds; stdout and stderr
//!   are split at `\n` (a trailing `\r` dropped), and a line longer than
//!   [`MAX_LINE_BYTES`] is cut there.
//! - Control characters (newlines included) are escaped (`\n`, `\u{1b}`),
//!   so a guest cannot start a host log line of its own or move a
//!   terminal's cursor; invalid UTF-8 becomes U+FFFD.
//! - Once the budget (lines or bytes) is spent, one marker line says so and
//!   every later line is dropped and counted. Writes still succeed: a guest
//!   that prints too much keeps running (its deadline stops it), it is only
//!   no longer heard.
//!
//! What it is not: a place the client sees. Guest logs go to the host's
//! log only; output for the client goes through `job.emit` and `run`.

use std::sync::{Arc, Mutex};

/// The longest line kept whole; longer stdout lines are cut into pieces
/// and a longer `job.log` message is cut short.
pub(crate) const MAX_LINE_BYTES: usize = 4096;

/// How much one job may put into the host's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogBudget {
    pub(crate) lines: u32,
    pub(crate) bytes: u64,
}

/// Where a line came from; its level in the host log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    /// WASI stdout (logged at info).
    Stdout,
    /// WASI stderr (logged at warn).
    Stderr,
}

/// One line for the host log, already escaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogLine {
    Line {
        source: Source,
        text: String,
    },
    /// The budget ran out here; later lines are dropped.
    Truncated {
        budget: LogBudget,
    },
}

/// One job's log state.
#[derive(Debug)]
pub(crate) struct GuestLog {
    budget: LogBudget,
    lines: u32,
    bytes: u64,
    /// The budget ran out (the marker was emitted).
    truncated: bool,
    /// Lines dropped after the budget ran out.
    dropped: u64,
    /// Bytes of an unfinished stdout / stderr line.
    pending_out: Vec<u8>,
    pending_err: Vec<u8>,
}

impl GuestLog {
    pub(crate) fn new(budget: LogBudget) -> Self {
        Self {
            budget,
            lines: 0,
            bytes: 0,
            truncated: false,
            dropped: 0,
            pending_out: Vec::new(),
            pending_err: Vec::new(),
        }
    }

    /// Lines dropped because the budget was spent.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// A `job.log` message: one line, however many newlines it holds.
    pub(crate) fn message(&mut self, source: Source, message: &str) -> Vec<LogLine> {
        let cut = cut_at_char_boundary(message, MAX_LINE_BYTES);
        let mut out = Vec::new();
        self.admit(source, escape(cut.as_bytes()), &mut out);
        out
    }

    /// Bytes written to stdout or stderr: every complete line in them.
    pub(crate) fn write(&mut self, stream: Source, bytes: &[u8]) -> Vec<LogLine> {
        let mut out = Vec::new();
        if self.truncated {
            // Nothing more will be heard: count whole lines, keep nothing.
            self.dropped += bytes.iter().filter(|b| **b == b'\n').count() as u64;
            return out;
        }
        for &b in bytes {
            let pending = self.pending(stream);
            if b == b'\n' {
                let line = std::mem::take(pending);
                self.emit_raw(stream, &line, &mut out);
            } else {
                pending.push(b);
                if pending.len() >= MAX_LINE_BYTES {
                    let line = std::mem::take(pending);
                    self.emit_raw(stream, &line, &mut out);
                }
            }
        }
        out
    }

    /// The job ended: unfinished stdout and stderr lines are emitted.
    pub(crate) fn finish(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        for stream in [Source::Stdout, Source::Stderr] {
            let line = std::mem::take(self.pending(stream));
            if !line.is_empty() {
                self.emit_raw(stream, &line, &mut out);
            }
        }
        out
    }

    fn pending(&mut self, stream: Source) -> &mut Vec<u8> {
        match stream {
            Source::Stderr => &mut self.pending_err,
            _ => &mut self.pending_out,
        }
    }

    fn emit_raw(&mut self, stream: Source, line: &[u8], out: &mut Vec<LogLine>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        self.admit(stream, escape(line), out);
    }

    /// Counts `text` against the budget and emits it, or the marker once.
    fn admit(&mut self, source: Source, text: String, out: &mut Vec<LogLine>) {
        let size = text.len() as u64;
        let fits = !self.truncated
            && self.lines < self.budget.lines
            && self.bytes + size <= self.budget.bytes;
        if !fits {
            if !self.truncated {
                // The first line over: say so once.
                out.push(LogLine::Truncated {
                    budget: self.budget,
                });
                self.truncated = true;
            }
            self.dropped += 1;
            return;
        }
        self.lines += 1;
        self.bytes += size;
        out.push(LogLine::Line { source, text });
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn cut_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `bytes` as text with invalid UTF-8 replaced and every control character
/// escaped as Rust's `escape_debug` writes it (`\n`, `\t`, `\u{1b}`).
fn escape(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// A job's log, shared by its host functions and its WASI output streams;
/// lines go to `tracing` under target `guest` with the job id.
#[derive(Debug, Clone)]
pub(crate) struct SharedLog {
    job: spillway_proto::JobId,
    log: Arc<Mutex<GuestLog>>,
}

impl SharedLog {
    pub(crate) fn new(job: spillway_proto::JobId, budget: LogBudget) -> Self {
        Self {
            job,
            log: Arc::new(Mutex::new(GuestLog::new(budget))),
        }
    }

    pub(crate) fn message(&self, source: Source, message: &str) {
        let lines = self.lock().message(source, message);
        self.emit(lines);
    }

    pub(crate) fn write(&self, stream: Source, bytes: &[u8]) {
        let lines = self.lock().write(stream, bytes);
        self.emit(lines);
    }

    /// Emits unfinished lines; returns how many lines were dropped.
    pub(crate) fn finish(&self) -> u64 {
        let (lines, dropped) = {
            let mut log = self.lock();
            (log.finish(), log.dropped())
        };
        self.emit(lines);
        dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GuestLog> {
        // A panic while holding it leaves plain counters behind: still usable.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, lines: Vec<LogLine>) {
        let job = self.job;
        for line in lines {
            match line {
                LogLine::Line { source, text } => match source {
                    Source::Trace => tracing::trace!(target: "guest", job = %job, "{text}"),
                    Source::Debug => tracing::debug!(target: "guest", job = %job, "{text}"),
                    Source::Info => tracing::info!(target: "guest", job = %job, "{text}"),
                    Source::Stdout => {
                        tracing::info!(target: "guest", job = %job, stream = "stdout", "{text}")
                    }
                    Source::Warn => tracing::warn!(target: "guest", job = %job, "{text}"),
                    Source::Stderr => {
                        tracing::warn!(target: "guest", job = %job, stream = "stderr", "{text}")
                    }
                    Source::Error => tracing::error!(target: "guest", job = %job, "{text}"),
                },
                LogLine::Truncated { budget } => tracing::warn!(
                    target: "guest",
                    job = %job,
                    "guest log truncated: the job's budget of {} lines or {} bytes is spent; later lines are dropped",
                    budget.lines,
                    budget.bytes
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOMY: LogBudget = LogBudget {
        lines: 100,
        bytes: 10_000,
    };

    fn line(source: Source, text: &str) -> LogLine {
        LogLine::Line {
            source,
            text: text.to_owned(),
        }
    }

    #[test]
    fn messages_are_one_line_with_control_characters_escaped() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("two\nlines", "two\\nlines"),
            (
                "fake\n2026-12-06T00:00:00Z INFO host: ok",
                "fake\\n2026-12-06T00:00:00Z INFO host: ok",
            ),
            ("\u{1b}[2Jclear", "\\u{1b}[2Jclear"),
            ("tab\there\r", "tab\\there\\r"),
            ("ünïcödé ✓", "ünïcödé ✓"),
        ];
        for (input, want) in cases {
            let mut log = GuestLog::new(ROOMY);
            assert_eq!(
                log.message(Source::Info, input),
                vec![line(Source::Info, want)],
                "{input:?}"
            );
        }
    }

    #[test]
    fn stdout_is_split_into_lines_and_the_rest_waits_for_the_end() {
        let mut log = GuestLog::new(ROOMY);
        assert_eq!(log.write(Source::Stdout, b"par"), vec![]);
        assert_eq!(
            log.write(Source::Stdout, b"tial\r\nsecond\nthi"),
            vec![
                line(Source::Stdout, "partial"),
                line(Source::Stdout, "second")
            ]
        );
        // stderr keeps its own unfinished line.
        assert_eq!(log.write(Source::Stderr, b"err"), vec![]);
        assert_eq!(
            log.finish(),
            vec![line(Source::Stdout, "thi"), line(Source::Stderr, "err")]
        );
        assert_eq!(log.finish(), vec![]);
    }

    #[test]
    fn invalid_utf8_and_long_lines_are_made_safe() {
        let mut log = GuestLog::new(ROOMY);
        assert_eq!(
            log.write(Source::Stdout, b"a\xffb\n"),
            vec![line(Source::Stdout, "a\u{fffd}b")]
        );
        let long = vec![b'x'; MAX_LINE_BYTES + 10];
        let lines = log.write(Source::Stdout, &long);
        assert_eq!(
            lines,
            vec![line(Source::Stdout, &"x".repeat(MAX_LINE_BYTES))]
        );
        assert_eq!(log.finish(), vec![line(Source::Stdout, &"x".repeat(10))]);
        let message = "é".repeat(MAX_LINE_BYTES);
        match &log.message(Source::Info, &message)[..] {
            [LogLine::Line { text, .. }] => assert_eq!(text.len(), MAX_LINE_BYTES),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_budget_holds_with_one_marker_for_lines_and_for_bytes() {
        let budget = LogBudget {
            lines: 3,
            bytes: 1_000,
        };
        let mut log = GuestLog::new(budget);
        let mut all = Vec::new();
        for i in 0..10 {
            all.extend(log.message(Source::Info, &format!("m{i}")));
            all.extend(log.write(Source::Stdout, b"out\n"));
        }
        all.extend(log.finish());
        assert_eq!(
            all,
            vec![
                line(Source::Info, "m0"),
                line(Source::Stdout, "out"),
                line(Source::Info, "m1"),
                LogLine::Truncated { budget },
            ]
        );
        assert_eq!(log.dropped(), 17);

        let budget = LogBudget {
            lines: 100,
            bytes: 10,
        };
        let mut log = GuestLog::new(budget);
        assert_eq!(
            log.message(Source::Warn, "12345"),
            vec![line(Source::Warn, "12345")]
        );
        assert_eq!(
            log.message(Source::Warn, "123456"),
            vec![LogLine::Truncated { budget }]
        );
        assert_eq!(log.message(Source::Warn, "1"), vec![]);
        assert_eq!(log.write(Source::Stdout, b"a\nb\nc"), vec![]);
        assert_eq!(log.finish(), vec![]);
        assert_eq!(log.dropped(), 4);
    }
}
