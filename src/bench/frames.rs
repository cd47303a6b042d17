//! The request/response modes' socket: WebSocket frames written and read
//! straight on the connection's stream, the way `redis-benchmark` writes
//! RESP.
//!
//! A load client must cost less than the hub it measures: on a 2-core machine
//! every microsecond the client spends is one the hub cannot. Going through
//! `tokio-tungstenite` for every request (a `Message`, a `Sink::feed`, a
//! `Stream::poll_next` and a UTF-8 check per frame) cost the client more user
//! CPU than the whole `redis-benchmark` process, so these modes take the
//! stream over once the crate has done the handshake. Frames are still
//! tungstenite's: [`FrameHeader`] formats and parses every header, and every
//! request frame carries its own mask as RFC 6455 requires of a client. What
//! is left here is a write buffer, a read buffer and the mask XOR.

use std::io::Cursor;

use anyhow::{anyhow, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
use tokio_tungstenite::MaybeTlsStream;

use super::{Rng, Ws};

/// Bytes asked of the socket per read: a burst of 16 replies to 100-byte
/// values is about 2.5 KiB.
const READ_CHUNK: usize = 16 * 1024;

/// The largest frame a load connection accepts from the hub (its own
/// default message limit); anything larger ends the connection.
const MAX_FRAME: u64 = 16 * 1024 * 1024;

/// What [`LoadSocket::drain`] found in one complete frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming<'a> {
    /// A text frame's payload (not checked for UTF-8: only its first bytes
    /// are ever looked at).
    Text(&'a [u8]),
    /// A binary or fragmented frame: the hub sends neither to a load client.
    Unexpected,
}

/// Appends one final, masked frame to `out`.
fn encode(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    let header = FrameHeader {
        opcode,
        mask: Some(mask),
        ..FrameHeader::default()
    };
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, out);
    let start = out.len();
    out.extend_from_slice(payload);
    let mut words = out[start..].chunks_exact_mut(4);
    let key = u32::from_ne_bytes(mask);
    for w in &mut words {
        let x = u32::from_ne_bytes([w[0], w[1], w[2], w[3]]) ^ key;
        w.copy_from_slice(&x.to_ne_bytes());
    }
    for (b, m) in words.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// A handshaken WebSocket connection driven frame by frame.
pub(crate) struct LoadSocket {
    stream: MaybeTlsStream<tokio::net::TcpStream>,
    out: Vec<u8>,
    /// Bytes read; those before `start` are consumed.
    input: Vec<u8>,
    start: usize,
    closed: bool,
}

impl LoadSocket {
    /// Takes over the stream of a connection whose handshake is done and
    /// that has exchanged nothing since (the hub speaks only when asked).
    pub fn new(ws: Ws) -> Self {
        Self {
            stream: ws.into_inner(),
            out: Vec::with_capacity(4 * 1024),
            input: Vec::with_capacity(READ_CHUNK),
            start: 0,
            closed: false,
        }
    }

    /// Queues one text frame, masked with a fresh key from `rng`.
    pub fn queue_text(&mut self, text: &[u8], rng: &mut Rng) {
        let mask = (rng.next_u64() as u32).to_ne_bytes();
        encode(&mut self.out, OpCode::Data(Data::Text), text, mask);
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.stream.write_all(&self.out).await?;
        self.out.clear();
        Ok(())
    }

    /// Waits for more bytes from the hub; fails when the connection ended.
    pub async fn read_more(&mut self) -> anyhow::Result<()> {
        if self.closed {
            bail!("the hub closed the connection");
        }
        if self.start == self.input.len() {
            self.input.clear();
        } else {
            self.input.drain(..self.start);
        }
        self.start = 0;
        self.input.reserve(READ_CHUNK);
        match self.stream.read_buf(&mut self.input).await? {
            0 => Err(anyhow!("the hub closed the connection")),
            _ => Ok(()),
        }
    }

    /// Hands every complete frame read so far to `on_frame`, answers pings,
    /// and keeps a partial frame for the next read; fails on a close frame
    /// or bad framing.
    pub fn drain(&mut self, mut on_frame: impl FnMut(Incoming<'_>)) -> anyhow::Result<()> {
        loop {
            let unread = &self.input[self.start..];
            let mut cursor = Cursor::new(unread);
            let Some((header, len)) = FrameHeader::parse(&mut cursor)? else {
                return Ok(());
            };
            if len > MAX_FRAME {
                bail!("the hub sent a frame of {len} bytes");
            }
            let head = cursor.position() as usize;
            let len = len as usize;
            if unread.len() < head + len {
                return Ok(());
            }
            let payload = self.start + head..self.start + head + len;
            self.start = payload.end;
            match header.opcode {
                OpCode::Data(Data::Text) if header.is_final => {
                    on_frame(Incoming::Text(&self.input[payload]))
                }
                OpCode::Control(Control::Ping) => {
                    let mask = [0x5a, 0x17, 0xc3, 0x08];
                    encode(
                        &mut self.out,
                        OpCode::Control(Control::Pong),
                        &self.input[payload],
                        mask,
                    );
                }
                OpCode::Control(Control::Pong) => {}
                OpCode::Control(Control::Close) => {
                    self.closed = true;
                    bail!("the hub closed the connection");
                }
                _ => on_frame(Incoming::Unexpected),
            }
        }
    }

    /// Sends a close frame and waits (briefly) for the hub's.
    pub async fn close(mut self) {
        self.out.clear();
        encode(
            &mut self.out,
            OpCode::Control(Control::Close),
            &[],
            [0, 0, 0, 0],
        );
        let _ = self.flush().await;
        let wait = async {
            while self.read_more().await.is_ok() {
                if self.drain(|_| {}).is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wait).await;
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unmasks a client frame with tungstenite's own parser.
    fn parse(bytes: &[u8]) -> (FrameHeader, Vec<u8>) {
        let mut c = Cursor::new(bytes);
        let Ok(Some((h, len))) = FrameHeader::parse(&mut c) else {
            panic!("no frame in {bytes:?}");
        };
        let at = c.position() as usize;
        let mask = h.mask.unwrap_or_default();
        let payload = bytes[at..at + len as usize]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        (h, payload)
    }

    #[test]
    fn frames_are_masked_text_of_every_length_format() {
        for len in [0usize, 5, 125, 126, 300, 70_000] {
            let text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut out = vec![9];
            encode(&mut out, OpCode::Data(Data::Text), &text, [1, 2, 3, 4]);
            let (h, payload) = parse(&out[1..]);
            assert_eq!(h.opcode, OpCode::Data(Data::Text));
            assert!(h.is_final);
            assert_eq!(payload, text, "length {len}");
        }
    }

    /// A server frame (unmasked).
    fn server_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let header = FrameHeader {
            opcode,
            ..FrameHeader::default()
        };
        let _ = header.format(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    #[tokio::test]
    async fn split_frames_pings_and_close_over_a_real_socket() -> anyhow::Result<()> {
        use tokio_tungstenite::tungstenite::protocol::Role;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (mut peer, _) = listener.accept().await?;
        let ws = Ws::from_raw_socket(MaybeTlsStream::Plain(tcp), Role::Client, None).await;
        let mut sock = LoadSocket::new(ws);

        // A text frame cut in two, a ping between two texts, then a close.
        let first = server_frame(OpCode::Data(Data::Text), b"{\"a\":1}");
        let (a, b) = first.split_at(4);
        peer.write_all(a).await?;
        let mut texts: Vec<Vec<u8>> = Vec::new();
        sock.read_more().await?;
        sock.drain(|f| panic!("half a frame surfaced: {f:?}"))?;
        let mut rest = b.to_vec();
        rest.extend(server_frame(OpCode::Control(Control::Ping), b"hi"));
        rest.extend(server_frame(OpCode::Data(Data::Text), b"second"));
        peer.write_all(&rest).await?;
        while texts.len() < 2 {
            sock.read_more().await?;
            sock.drain(|f| {
                if let Incoming::Text(t) = f {
                    texts.push(t.to_vec());
                }
            })?;
        }
        assert_eq!(texts, vec![b"{\"a\":1}".to_vec(), b"second".to_vec()]);

        // The ping was answered with a masked pong carrying its payload.
        sock.flush().await?;
        let mut got = [0u8; 8];
        peer.read_exact(&mut got).await?;
        let (h, payload) = parse(&got);
        assert_eq!(h.opcode, OpCode::Control(Control::Pong));
        assert!(h.mask.is_some());
        assert_eq!(payload, b"hi");

        // A close frame ends the connection with an error.
        peer.write_all(&server_frame(OpCode::Control(Control::Close), b""))
            .await?;
        sock.read_more().await?;
        assert!(sock.drain(|_| {}).is_err());
        assert!(sock.read_more().await.is_err());
        Ok(())
    }
}
