//! Captures `tracing` events and spans (debug and above) from every thread, for the cases that
//! check what the logs say.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

static LOGS: Mutex<String> = Mutex::new(String::new());
/// Cases capturing now; no event is formatted while none is.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: OnceLock<bool> = OnceLock::new();
/// The buffer stops growing here.
const LIMIT: usize = 16 << 20;

/// While alive, events are captured.
pub(crate) struct Logs(());

/// Starts capturing (installing the capturing subscriber as the global default once).
///
/// # Panics
///
/// When another global subscriber is installed in this test binary.
pub(crate) fn start() -> Logs {
    let installed = *INSTALLED.get_or_init(|| {
        tracing::subscriber::set_global_default(Capture {
            next_span: AtomicU64::new(1),
        })
        .is_ok()
    });
    assert!(
        installed,
        "the conformance suite captures logs with its own global tracing subscriber; \
         this test binary already installed another"
    );
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    Logs(())
}

impl Logs {
    /// Everything captured so far (by every capturing case of this binary).
    pub(crate) fn text(&self) -> String {
        LOGS.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Capture {
    next_span: AtomicU64,
}

struct Line(String);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

fn append(metadata: &Metadata<'_>, record: impl FnOnce(&mut Line)) {
    let mut line = Line(format!("{} {}:", metadata.level(), metadata.target()));
    record(&mut line);
    let mut logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
    if logs.len() < LIMIT {
        logs.push_str(&line.0);
        logs.push('\n');
    }
}

impl Subscriber for Capture {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        ACTIVE.load(Ordering::Relaxed) > 0 && *metadata.level() <= Level::DEBUG
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        append(span.metadata(), |line| span.record(line));
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &Id, values: &Record<'_>) {
        let mut line = Line(String::from("span record:"));
        values.record(&mut line);
        let mut logs = LOGS.lock().unwrap_or_else(|p| p.into_inner());
        if logs.len() < LIMIT {
            logs.push_str(&line.0);
            logs.push('\n');
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        append(event.metadata(), |line| event.record(line));
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}
