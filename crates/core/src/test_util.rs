//! Test probes (feature `test-util`): things every crate's tests need.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Captures everything `tracing` prints while it is the default subscriber,
/// so a test can assert what was (or was not) logged.
///
/// # Example
///
/// ```
/// use palisade_core::test_util::LogCapture;
///
/// let logs = LogCapture::new();
/// let _guard = logs.set_default();
/// tracing::info!(attempt = 1, "retrying");
/// assert!(logs.contents().contains("attempt=1"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    /// An empty capture.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs a TRACE-level, plain-text subscriber writing here, as the
    /// default for this thread until the guard drops.
    #[must_use = "the capture stops when the guard is dropped"]
    pub fn set_default(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(self.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    /// Everything captured so far, as text.
    pub fn contents(&self) -> String {
        let buf = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;

    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}
