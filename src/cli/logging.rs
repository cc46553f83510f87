//! The log format: text lines escape every value and the message (nothing from outside can
//! forge a line), or JSON lines; the level from the config or `RUST_LOG`.
//!
//! The same escaping rule serves the commands' text output: [`shown`] for one value and
//! [`shown_json`] for every string in an answer, so that an alert title, a note or a daemon's
//! error message printed by `cordon cases|approvals|learn|agents` can neither start a line of its
//! own nor drive the approver's terminal.

/// Sets up logging to stderr: `RUST_LOG` wins, else `level`; `json` or human text (every field
/// value and the message escaped by [`EscapedFields`]).
pub fn init_logging(format: &str, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.fmt_fields(EscapedFields).try_init()
    };
}

/// Field formatting for the text log: `name=value` pairs after the message, like
/// tracing-subscriber's default, but every value and the message itself escaped (`\r`, `\n`,
/// `\0`, other C0/C1 controls, ESC, line/paragraph separators and bidi overrides as `\u{..}`),
/// whether it was recorded as a `&str`, with `%` (Display) or `?` (Debug). Values from outside
/// (unknown keys, alert entities, ids) can then never start a line that reads as cordon's own, nor
/// drive the terminal (CWE-117). The JSON format quotes everything already.
pub struct EscapedFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut v = EscapingVisitor {
            writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut v);
        v.result
    }
}

struct EscapingVisitor<'w> {
    writer: tracing_subscriber::fmt::format::Writer<'w>,
    result: std::fmt::Result,
    first: bool,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &tracing::field::Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        let name = field.name();
        self.result = if name == "message" {
            self.writer
                .write_str(sep)
                .and_then(|()| write_escaped(&mut self.writer, value))
        } else {
            let name = name.strip_prefix("r#").unwrap_or(name);
            write!(self.writer, "{sep}{name}=")
                .and_then(|()| write_escaped(&mut self.writer, value))
        };
    }
}

impl tracing::field::Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.write(field, value);
        } else {
            // Quoted, as the default format does for strings.
            self.write(field, &format!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

/// Whether `c` could end a line, reorder the text around it or reach the terminal as (part of) a
/// control sequence: C0 controls (`\n`, `\r`, `\t`, NUL, ESC, ...), DEL and the C1 controls
/// U+0080–U+009F (`char::is_control`), the line and paragraph separators and the bidi
/// embeddings, overrides and isolates.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Writes `s` with every [`unsafe_char`] replaced by an escape (`\n`, `\r`, `\t`, `\0`, else
/// `\u{..}`).
fn write_escaped(w: &mut impl std::fmt::Write, s: &str) -> std::fmt::Result {
    if !s.chars().any(unsafe_char) {
        return w.write_str(s);
    }
    for c in s.chars() {
        match c {
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            '\t' => w.write_str("\\t")?,
            '\0' => w.write_str("\\0")?,
            c if unsafe_char(c) => write!(w, "\\u{{{:x}}}", u32::from(c))?,
            c => w.write_char(c)?,
        }
    }
    Ok(())
}

/// `s` as the CLI's text output prints a value that came from outside: escaped as the text log
/// escapes it, borrowed unchanged when there is nothing to escape.
pub(super) fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    // Writing to a `String` cannot fail.
    let _ = write_escaped(&mut out, s);
    std::borrow::Cow::Owned(out)
}

/// `v` with every string in it (at any depth) [`shown`]: a daemon's answer made safe to format as
/// text in one step, whatever field of it a command prints. Keys are left as they are (the
/// commands print values only); `--json` output uses the answer unchanged.
pub(super) fn shown_json(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) if s.chars().any(unsafe_char) => Value::String(shown(&s).into_owned()),
        Value::Array(a) => Value::Array(a.into_iter().map(shown_json).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, shown_json(v))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Everything the subscriber wrote.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn shown_escapes_what_could_end_a_line_or_drive_a_terminal() {
        for (input, want) in [
            ("", ""),
            ("Malware on ws-042", "Malware on ws-042"),
            ("naïve café — ünïcode ✓", "naïve café — ünïcode ✓"),
            ("a\nb", "a\\nb"),
            ("a\r\nFAKE LINE", "a\\r\\nFAKE LINE"),
            ("a\tb", "a\\tb"),
            ("nul\0", "nul\\0"),
            ("\u{1b}[2J\u{1b}[31mRED", "\\u{1b}[2J\\u{1b}[31mRED"),
            ("\u{1b}]0;pwned\u{7}", "\\u{1b}]0;pwned\\u{7}"),
            ("del\u{7f}", "del\\u{7f}"),
            ("csi\u{9b}2J", "csi\\u{9b}2J"),
            ("c1\u{80}\u{85}\u{9f}", "c1\\u{80}\\u{85}\\u{9f}"),
            ("evil\u{202e}fdp.exe", "evil\\u{202e}fdp.exe"),
            (
                "\u{202a}\u{202d}\u{2066}\u{2069}",
                "\\u{202a}\\u{202d}\\u{2066}\\u{2069}",
            ),
            ("ls\u{2028}ps\u{2029}", "ls\\u{2028}ps\\u{2029}"),
        ] {
            let got = shown(input);
            assert_eq!(got, want, "shown({input:?})");
            assert!(
                !got.chars().any(unsafe_char),
                "shown({input:?}) = {got:?} still holds a control"
            );
        }
        // Nothing to escape: the value itself, not a copy.
        let plain = "Credential dumping: LSASS memory read";
        assert!(matches!(shown(plain), std::borrow::Cow::Borrowed(s) if std::ptr::eq(s, plain)));
    }

    #[test]
    fn shown_json_escapes_every_string_at_any_depth_and_nothing_else() {
        let v = serde_json::json!({
            "title": "T\u{1b}[2J\r\nFAKE",
            "n": 3,
            "ok": true,
            "none": null,
            "notes": [{"by": "bob", "text": "line one\nline two"}],
            "nested": {"deep": ["\u{9b}x", "plain"]},
        });
        assert_eq!(
            shown_json(v),
            serde_json::json!({
                "title": "T\\u{1b}[2J\\r\\nFAKE",
                "n": 3,
                "ok": true,
                "none": null,
                "notes": [{"by": "bob", "text": "line one\\nline two"}],
                "nested": {"deep": ["\\u{9b}x", "plain"]},
            })
        );
    }

    #[test]
    fn text_log_escapes_every_value_and_the_message() {
        let out = Captured::default();
        let w = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || w.clone())
            .fmt_fields(EscapedFields)
            .finish();
        let forged = "zz\r\n2026-01-01T00:00:00.000000Z  INFO cordon::daemon: forged log line\0\u{1b}[31m\u{2028}";
        struct Shown(&'static str);
        impl std::fmt::Display for Shown {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", id = %Shown("a\nb"));
            let _g = span.enter();
            tracing::info!(key = forged, "refused as str");
            tracing::info!(key = %Shown(forged), "refused as display");
            tracing::info!(key = ?forged, "refused as debug");
            tracing::info!("refused in the message: {}", Shown(forged));
            tracing::info!(r#type = "x", "raw identifier");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        for l in &lines {
            assert!(l.contains(" INFO request{id=a\\nb}:"), "{l}");
            assert!(
                !l.contains('\u{1b}') && !l.contains('\0') && !l.contains('\r'),
                "{l:?}"
            );
            assert!(!l.contains('\u{2028}'), "{l:?}");
        }
        assert!(lines[0].ends_with(
            "refused as str key=\"zz\\r\\n2026-01-01T00:00:00.000000Z  INFO cordon::daemon: forged log line\\0\\u{1b}[31m\\u{2028}\""
        ), "{}", lines[0]);
        assert!(lines[1].ends_with("refused as display key=zz\\r\\n2026-01-01T00:00:00.000000Z  INFO cordon::daemon: forged log line\\0\\u{1b}[31m\\u{2028}"), "{}", lines[1]);
        assert!(
            lines[2].contains("refused as debug key=\"zz\\r\\n2026"),
            "{}",
            lines[2]
        );
        assert!(lines[3].ends_with("refused in the message: zz\\r\\n2026-01-01T00:00:00.000000Z  INFO cordon::daemon: forged log line\\0\\u{1b}[31m\\u{2028}"), "{}", lines[3]);
        assert!(
            lines[4].ends_with("raw identifier type=\"x\""),
            "{}",
            lines[4]
        );
    }
}
