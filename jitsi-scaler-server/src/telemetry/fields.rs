//! Fields of uncoloured text logs: the same text as `tracing_subscriber`'s `DefaultFields`,
//! written straight to the line instead of through its colour painter. Every request's span
//! formats its fields once, and without colour each name still went through two empty paints
//! and a formatting call of its own: 1 800 of the 5 150 instructions a check-in's span cost.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// Formats fields as `DefaultFields` does. A plain field without colour is written here; the
/// message, raw identifiers (`r#type`), log metadata (`log.*`), errors and coloured writers are
/// left to `DefaultFields`' own visitor, so their text is its text.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainFields;

impl<'a> MakeVisitor<Writer<'a>> for PlainFields {
    type Visitor = PlainVisitor<'a>;

    fn make_visitor(&self, writer: Writer<'a>) -> Self::Visitor {
        PlainVisitor {
            writer,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// The visitor of [`PlainFields`].
#[derive(Debug)]
pub struct PlainVisitor<'a> {
    writer: Writer<'a>,
    is_empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Whether `DefaultFields` writes this field in a way of its own.
    fn special(&self, name: &str) -> bool {
        self.writer.has_ansi_escapes()
            || name == "message"
            || name.starts_with("r#")
            || name.starts_with("log.")
    }

    /// Lets `DefaultFields`' visitor write one field where this one would.
    fn delegate(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        // It writes every field but log metadata.
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }

    fn write_plain(&mut self, name: &str, value: &dyn fmt::Debug) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.writer.write_char(' ')?;
        }
        self.writer.write_str(name)?;
        self.writer.write_char('=')?;
        write!(self.writer, "{value:?}")
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if self.special(field.name()) {
            self.delegate(field, |v| v.record_str(field, value));
        } else {
            self.result = self.write_plain(field.name(), &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.result.is_err() {
            return;
        }
        self.delegate(field, |v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if self.special(field.name()) {
            self.delegate(field, |v| v.record_debug(field, value));
        } else {
            self.result = self.write_plain(field.name(), value);
        }
    }
}

impl VisitOutput<fmt::Result> for PlainVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for PlainVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::format::DefaultFields;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("capture").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("capture").clone()).expect("utf-8")
        }
    }

    #[derive(Debug)]
    struct Outer(Inner);

    #[derive(Debug)]
    struct Inner;

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("store failed")
        }
    }

    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection \"reset\"")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    impl std::error::Error for Inner {}

    /// Every kind of field the server logs, in spans and events.
    fn log_everything() {
        let span = tracing::info_span!(
            "request",
            request_id = "r-1f \"quoted\"",
            method = %"POST",
            path = %"/sidecar/status",
        );
        let _entered = span.enter();
        let inner = tracing::info_span!("pass", group = "jvb", n = 3u64, r#type = "JVB");
        let _inner = inner.enter();
        tracing::info!("plain message");
        tracing::info!(count = 2, ratio = 0.5, ok = true, "with {} args", "format");
        tracing::warn!(error = &Outer(Inner) as &dyn std::error::Error, "failed");
        tracing::warn!(error = %Inner, detail = ?Some("x\ny"), "displayed and debugged");
        tracing::info!(
            r#type = "raw",
            "log.target" = "meta",
            signed = -7i64,
            "raw names"
        );
        tracing::info!(only = "fields, no message");
        tracing::info!(message = "a message field", after = 1);
        tracing::info!(empty = "");
        tracing::info!("log.module_path" = "m", after = 2);
    }

    fn formatted_by<F>(fields: F, ansi: bool) -> String
    where
        F: for<'w> tracing_subscriber::fmt::FormatFields<'w> + Send + Sync + 'static,
    {
        let capture = Capture::default();
        let writer = capture.clone();
        let layer = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .without_time()
            .fmt_fields(fields)
            .with_writer(move || writer.clone());
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, log_everything);
        capture.text()
    }

    #[test]
    fn plain_fields_write_what_the_default_fields_write() {
        for ansi in [false, true] {
            let expected = formatted_by(DefaultFields::new(), ansi);
            let plain = formatted_by(PlainFields, ansi);
            assert_eq!(plain, expected, "ansi: {ansi}");
            assert_eq!(expected.lines().count(), 9, "{expected}");
        }
        let text = formatted_by(PlainFields, false);
        assert!(
            text.contains(
                r#"request{request_id="r-1f \"quoted\"" method=POST path=/sidecar/status}"#
            ),
            "{text}"
        );
        assert!(
            text.contains("pass{group=\"jvb\" n=3 type=\"JVB\"}"),
            "{text}"
        );
        assert!(
            text.contains("error.sources=[connection \"reset\"]"),
            "{text}"
        );
        assert!(
            !text.contains("meta"),
            "log metadata is not written: {text}"
        );
        assert!(!text.contains('\u{1b}'), "no colour: {text}");
    }
}
