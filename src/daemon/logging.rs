//! Log setup: stderr (journald picks it up) plus a daily-rotated file, text or JSON.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{LogConfig, LogFormat};

/// How many rotated files are kept.
const KEEP_FILES: usize = 14;

/// Install the global subscriber. Keep the returned guard alive: it flushes the file
/// writer on drop. A log directory that cannot be used is reported and skipped (stderr
/// still works): a daemon that refuses to start over its log file helps nobody.
pub fn init(cfg: &LogConfig) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let mut file_problem = None;
    let file = cfg.dir.as_ref().and_then(|dir| {
        let built = std::fs::create_dir_all(dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                Builder::new()
                    .rotation(Rotation::DAILY)
                    .filename_prefix("sluice")
                    .filename_suffix("log")
                    .max_log_files(KEEP_FILES)
                    .build(dir)
                    .map_err(|e| e.to_string())
            });
        match built {
            Ok(appender) => Some(tracing_appender::non_blocking(appender)),
            Err(e) => {
                file_problem = Some(format!(
                    "cannot log to {}: {e}; logging to stderr only",
                    dir.display()
                ));
                None
            }
        }
    });
    let (file_writer, guard) = match file {
        Some((w, g)) => (Some(w), Some(g)),
        None => (None, None),
    };
    let layer = |w: BoxMakeWriter| -> Box<dyn Layer<Registry> + Send + Sync> {
        let l = tracing_subscriber::fmt::layer()
            .with_writer(w)
            .with_ansi(false);
        match cfg.format {
            LogFormat::Text => Box::new(l),
            LogFormat::Json => Box::new(l.json().flatten_event(true)),
        }
    };
    let mut layers = vec![layer(BoxMakeWriter::new(std::io::stderr))];
    if let Some(w) = file_writer {
        layers.push(layer(BoxMakeWriter::new(w)));
    }
    if tracing_subscriber::registry()
        .with(layers.with_filter(filter))
        .try_init()
        .is_err()
    {
        eprintln!("sluice: a log subscriber was already installed");
    }
    if let Some(p) = file_problem {
        tracing::warn!("{p}");
    }
    guard
}
