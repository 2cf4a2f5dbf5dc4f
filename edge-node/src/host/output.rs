//! A guest's captured stdout/stderr and `log` lines: bounded, keeping the newest.
//!
//! A plain `MemoryOutputPipe` traps the guest when full, which would turn a chatty guest into a
//! faulted room. This keeps the newest lines instead, so a panic message written just before a
//! trap is always there to report.

use bytes::Bytes;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The newest lines of a room's output.
#[derive(Debug)]
pub struct LogRing {
    lines: VecDeque<String>,
    partial: Vec<u8>,
    max_lines: usize,
    max_line_len: usize,
}

impl LogRing {
    /// A ring keeping `max_lines` lines of at most `max_line_len` bytes.
    pub fn new(max_lines: usize, max_line_len: usize) -> Self {
        LogRing { lines: VecDeque::new(), partial: Vec::new(), max_lines: max_lines.max(1), max_line_len }
    }

    /// Adds one finished line (truncated to the line limit).
    pub fn push_line(&mut self, line: &str) {
        let mut s = line.to_string();
        if s.len() > self.max_line_len {
            s.truncate(s.floor_char_boundary(self.max_line_len));
            s.push('…');
        }
        if self.lines.len() == self.max_lines {
            self.lines.pop_front();
        }
        self.lines.push_back(s);
    }

    /// Adds raw output bytes, splitting at newlines.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                self.push_line(&line);
            } else if self.partial.len() < self.max_line_len {
                self.partial.push(b);
            }
        }
    }

    /// All kept lines, oldest first, with any unfinished line last.
    pub fn lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lines.iter().cloned().collect();
        if !self.partial.is_empty() {
            v.push(String::from_utf8_lossy(&self.partial).into_owned());
        }
        v
    }
}

/// Shared handle to a room's log, usable as a WASI stdout/stderr.
#[derive(Debug, Clone)]
pub struct RoomLog(pub Arc<Mutex<LogRing>>);

impl RoomLog {
    /// A log with the given bounds.
    pub fn new(max_lines: usize, max_line_len: usize) -> Self {
        RoomLog(Arc::new(Mutex::new(LogRing::new(max_lines, max_line_len))))
    }

    /// Runs `f` on the ring; a poisoned lock is recovered, since the ring is always consistent.
    pub fn with<T>(&self, f: impl FnOnce(&mut LogRing) -> T) -> T {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }
}

#[async_trait::async_trait]
impl Pollable for RoomLog {
    async fn ready(&mut self) {}
}

impl OutputStream for RoomLog {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.with(|r| r.write_bytes(&bytes));
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl IsTerminal for RoomLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl tokio::io::AsyncWrite for RoomLog {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.with(|r| r.write_bytes(buf));
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl StdoutStream for RoomLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_newest_lines_and_bounds_length() {
        let mut r = LogRing::new(2, 5);
        r.write_bytes(b"one\ntwo\nthree-long\npart");
        assert_eq!(r.lines(), vec!["two".to_string(), "three".to_string(), "part".to_string()]);
        r.push_line("abcdefgh");
        assert_eq!(r.lines()[1], "abcde…");
    }
}
