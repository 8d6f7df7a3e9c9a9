//! The agent's own log file, for when nobody reads its stderr: the Windows
//! service (`muster-agent service`), whose stderr the service control manager
//! discards, logs to `%ProgramData%\Muster\agent.log`. The file is kept under
//! a size: a line that would take it past that first moves it to
//! `agent.log.1` (replacing the older one), so at most about twice the size
//! is kept.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

/// The size the service's log file is kept under.
pub const MAX_BYTES: u64 = 10 * 1024 * 1024;

/// A log file appended to line by line (each `tracing` event is one write),
/// moved aside when full. A [`tracing_subscriber::fmt::MakeWriter`].
pub struct LogFile {
    path: PathBuf,
    max_bytes: u64,
    open: Mutex<Open>,
}

struct Open {
    file: File,
    len: u64,
}

impl LogFile {
    /// Opens `path` for appending (made, with its folder, when missing).
    pub fn open(path: &Path, max_bytes: u64) -> io::Result<LogFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = append(path)?;
        let len = file.metadata()?.len();
        Ok(LogFile {
            path: path.to_path_buf(),
            max_bytes,
            open: Mutex::new(Open { file, len }),
        })
    }

    /// Where a full file is moved: the path with `.1` added.
    pub fn previous(path: &Path) -> PathBuf {
        let mut name = OsString::from(path.as_os_str());
        name.push(".1");
        PathBuf::from(name)
    }

    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let len = u64::try_from(line.len()).unwrap_or(u64::MAX);
        if open.len > 0 && open.len.saturating_add(len) > self.max_bytes {
            // When the file cannot be moved, it grows rather than losing lines.
            let moved = std::fs::rename(&self.path, Self::previous(&self.path))
                .and_then(|()| append(&self.path));
            if let Ok(file) = moved {
                *open = Open { file, len: 0 };
            }
        }
        open.file.write_all(line)?;
        open.len = open.len.saturating_add(len);
        Ok(())
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// One event's writer.
pub struct Line<'a>(&'a LogFile);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_line(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogFile {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_and_a_full_file_moves_aside_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs").join("agent.log");
        let log = LogFile::open(&path, 20).unwrap();
        log.write_line(b"first line 1234\n").unwrap();
        // Reopened: appends after what is there.
        drop(log);
        let log = LogFile::open(&path, 20).unwrap();
        log.write_line(b"2nd\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "first line 1234\n2nd\n"
        );
        // Past 20 bytes: the file moves to agent.log.1, the line starts a new one.
        log.write_line(b"third\n").unwrap();
        let previous = LogFile::previous(&path);
        assert_eq!(previous, dir.path().join("logs").join("agent.log.1"));
        assert_eq!(
            std::fs::read_to_string(&previous).unwrap(),
            "first line 1234\n2nd\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "third\n");
        // A line longer than the limit goes into a file of its own.
        log.write_line(b"a line of more than twenty bytes\n")
            .unwrap();
        log.write_line(b"x\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&previous).unwrap(),
            "a line of more than twenty bytes\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "x\n");
    }

    #[test]
    fn tracing_events_land_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let log = LogFile::open(&path, MAX_BYTES).unwrap();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log)
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(reason = "test", "not ready to run");
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("WARN"), "{text}");
        assert!(text.contains("not ready to run reason=\"test\""), "{text}");
    }
}
