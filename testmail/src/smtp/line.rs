//! Reading CRLF-terminated lines with a length limit, for SMTP.

use tokio::io::{AsyncRead, AsyncReadExt};

/// One read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line, terminator included (`\r\n`, or a bare `\n` from a sloppy
    /// client: we keep what was sent).
    Complete(Vec<u8>),
    /// The line was longer than the limit; it has been read and thrown away.
    TooLong,
    /// The peer closed the connection.
    Eof,
}

#[derive(Debug)]
pub(crate) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    /// Start of unread data in `buf`.
    start: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        LineReader {
            inner,
            buf: Vec::with_capacity(8192),
            start: 0,
        }
    }

    pub(crate) fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Reads one line of at most `limit` bytes (terminator included). The
    /// buffer never grows much beyond `limit`, whatever the peer sends.
    pub(crate) async fn read_line(&mut self, limit: usize) -> std::io::Result<Line> {
        let mut discarding = false;
        loop {
            if let Some(pos) = self.buf[self.start..].iter().position(|&b| b == b'\n') {
                let end = self.start + pos + 1;
                let line = if discarding || end - self.start > limit {
                    Line::TooLong
                } else {
                    Line::Complete(self.buf[self.start..end].to_vec())
                };
                self.start = end;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(line);
            }
            if self.buf.len() - self.start > limit {
                discarding = true;
                self.buf.clear();
                self.start = 0;
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            let mut chunk = [0u8; 8192];
            let n = self.inner.read(&mut chunk).await?;
            if n == 0 {
                return Ok(Line::Eof);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn splits_limits_and_recovers() {
        let input: &[u8] = b"HELO a\r\nTOOLONGLINE\r\nok\nrest";
        let mut r = LineReader::new(input);
        assert_eq!(
            r.read_line(10).await.unwrap(),
            Line::Complete(b"HELO a\r\n".to_vec())
        );
        assert_eq!(r.read_line(10).await.unwrap(), Line::TooLong);
        assert_eq!(
            r.read_line(10).await.unwrap(),
            Line::Complete(b"ok\n".to_vec())
        );
        assert_eq!(r.read_line(10).await.unwrap(), Line::Eof);
    }

    #[tokio::test]
    async fn discards_long_lines_without_buffering_them() {
        let mut input = vec![b'x'; 100_000];
        input.extend_from_slice(b"\r\nnext\r\n");
        let mut r = LineReader::new(&input[..]);
        assert_eq!(r.read_line(100).await.unwrap(), Line::TooLong);
        assert!(r.buf.capacity() < 50_000);
        assert_eq!(
            r.read_line(100).await.unwrap(),
            Line::Complete(b"next\r\n".to_vec())
        );
    }
}
