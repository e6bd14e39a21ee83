//! What an ingest stream reads: its messages, decoded, with their length on the wire.
//!
//! The Ingest service's three stream paths read their messages straight from the request body
//! ([`BodyMessages`]): a message is gathered into a buffer of its own length (or decoded where
//! it lies, when one data frame holds it whole) and decoded, and the buffer goes with the
//! message ([`FromWire`]: a metric batch keeps it until its WAL record is made), so a stream
//! holds no buffer between messages. tonic's `Streaming` keeps one buffer a stream that grows
//! to about twice the largest message and stays for the stream's life: 2.7 MB a stream at
//! 25,000 series a message, 11 MB of the daemon's heap with four such streams at 100,000
//! series (heaptrack, 2026-12-07).
use crate::store::SeriesBatch;
use bytes::{Buf, Bytes};
use std::future::Future;
use std::pin::Pin;
use tonic::codegen::{http, Body, StdError};
use tonic::{Code, Status, Streaming};

/// The stream of messages an ingest stream's reader takes from.
pub trait Inbound<T>: Send + 'static {
    /// The next message and its length on the wire; `None` once the client has ended the
    /// stream.
    fn next_message(&mut self) -> impl Future<Output = Result<Option<(T, usize)>, Status>> + Send;
}

/// The generated service's streams (only a service built without [`super::streams`] gets one).
impl<T: prost::Message + Default + Send + 'static> Inbound<T> for Streaming<T> {
    async fn next_message(&mut self) -> Result<Option<(T, usize)>, Status> {
        Ok(self.message().await?.map(|m| {
            let n = m.encoded_len();
            (m, n)
        }))
    }
}

/// A message a stream decodes, offered the bytes it was decoded from.
pub trait FromWire: prost::Message + Default {
    /// Keeps what it can use of `wire`, its message; by default nothing.
    fn keep_wire(&mut self, _wire: Bytes) {}
}

impl FromWire for crate::pb::LogBatch {}
impl FromWire for crate::pb::EventBatch {}

/// A metric batch that validation leaves as it came is stored as the message it came in,
/// without being encoded again ([`SeriesBatch::protobuf`]).
impl FromWire for SeriesBatch {
    fn keep_wire(&mut self, wire: Bytes) {
        SeriesBatch::keep_wire(self, wire);
    }
}

/// A gRPC message's prefix: a compressed flag and a big-endian length.
const PREFIX: usize = 5;

/// Messages read from a request body (gRPC's length-prefixed framing, no compression).
pub struct BodyMessages<B, T> {
    body: Pin<Box<B>>,
    /// What the messages before have left of the last data frame.
    rest: Bytes,
    /// `limits.max_message_bytes`.
    limit: usize,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<B, T> BodyMessages<B, T>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<StdError>,
    T: prost::Message + Default,
{
    pub fn new(body: B, limit: usize) -> Self {
        BodyMessages { body: Box::pin(body), rest: Bytes::new(), limit, _t: std::marker::PhantomData }
    }

    /// Reads the next data frame into `rest`; false once the body has ended (or the client
    /// cancelled the call: tonic reads that as the end too).
    async fn frame(&mut self) -> Result<bool, Status> {
        loop {
            let frame = std::future::poll_fn(|cx| self.body.as_mut().poll_frame(cx)).await;
            match frame {
                None => return Ok(false),
                Some(Err(e)) => {
                    let s = Status::from_error(e.into());
                    return if s.code() == Code::Cancelled { Ok(false) } else { Err(s) };
                }
                Some(Ok(f)) => {
                    // Trailers from a client carry nothing this service reads.
                    if let Ok(mut data) = f.into_data() {
                        if data.has_remaining() {
                            self.rest = data.copy_to_bytes(data.remaining());
                            return Ok(true);
                        }
                    }
                }
            }
        }
    }

    /// Appends `n` bytes to `out`; false if the body ended before the first of them.
    async fn read(&mut self, out: &mut Vec<u8>, n: usize) -> Result<bool, Status> {
        let end = out.len() + n;
        while out.len() < end {
            if self.rest.is_empty() && !self.frame().await? {
                return if out.len() == end - n {
                    Ok(false)
                } else {
                    Err(Status::internal("the stream ended inside a message"))
                };
            }
            let take = (end - out.len()).min(self.rest.len());
            out.extend_from_slice(&self.rest[..take]);
            self.rest.advance(take);
        }
        Ok(true)
    }
}

impl<B, T> Inbound<T> for BodyMessages<B, T>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<StdError>,
    T: FromWire + Send + 'static,
{
    async fn next_message(&mut self) -> Result<Option<(T, usize)>, Status> {
        let mut prefix = Vec::with_capacity(PREFIX);
        if !self.read(&mut prefix, PREFIX).await? {
            return Ok(None);
        }
        match prefix[0] {
            0 => {}
            1 => {
                return Err(Status::internal(
                    "protocol error: received message with compressed-flag but no grpc-encoding was specified",
                ))
            }
            f => {
                return Err(Status::internal(format!(
                    "protocol error: received message with invalid compression flag: {f} (valid flags are 0 and 1)"
                )))
            }
        }
        let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if len > self.limit {
            return Err(Status::resource_exhausted(format!(
                "message of {len} bytes exceeds limits.max_message_bytes = {}",
                self.limit
            )));
        }
        let wire = if self.rest.len() >= len {
            // Whole in the frame at hand: decoded where it lies.
            self.rest.split_to(len)
        } else {
            let mut buf = Vec::with_capacity(len);
            if !self.read(&mut buf, len).await? {
                return Err(Status::internal("the stream ended inside a message"));
            }
            Bytes::from(buf)
        };
        let mut m = T::decode(&wire[..]).map_err(|e| Status::internal(e.to_string()))?;
        m.keep_wire(wire);
        Ok(Some((m, len)))
    }
}

/// Refuses a request whose messages are compressed: this service accepts none (tonic's answer
/// and wording).
pub fn unsupported_encoding(headers: &http::HeaderMap) -> Option<Status> {
    let v = headers.get("grpc-encoding")?;
    if v.as_bytes() == b"identity" {
        return None;
    }
    let what = String::from_utf8_lossy(v.as_bytes());
    let mut s = Status::unimplemented(format!("Content is compressed with `{what}` which isn't supported"));
    s.metadata_mut().insert("grpc-accept-encoding", tonic::metadata::MetadataValue::from_static("identity"));
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use http_body_util::StreamBody;
    use prost::Message;
    use tonic::codegen::http::HeaderMap;

    type Frames = StreamBody<tokio_stream::Iter<std::vec::IntoIter<Result<http_body::Frame<Bytes>, Status>>>>;

    /// A body of these data frames, then `end` (trailers, an error, or nothing).
    fn body(frames: Vec<Vec<u8>>, end: Option<Result<http_body::Frame<Bytes>, Status>>) -> Frames {
        let mut v: Vec<_> = frames.into_iter().map(|f| Ok(http_body::Frame::data(Bytes::from(f)))).collect();
        v.extend(end);
        StreamBody::new(tokio_stream::iter(v))
    }

    fn framed(m: &impl Message) -> Vec<u8> {
        framed_bytes(&m.encode_to_vec())
    }

    /// A message's bytes with gRPC's prefix.
    fn framed_bytes(b: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend((b.len() as u32).to_be_bytes());
        out.extend(b);
        out
    }

    fn batch(i: usize) -> pb::LogBatch {
        pb::LogBatch {
            service: format!("svc{i}"),
            records: (0..i)
                .map(|k| pb::LogRecord { message: format!("record {k} of {i}"), ..Default::default() })
                .collect(),
            ..Default::default()
        }
    }

    async fn all(b: Frames, limit: usize) -> (Vec<(pb::LogBatch, usize)>, Option<Status>) {
        let mut r = BodyMessages::<_, pb::LogBatch>::new(b, limit);
        let mut out = Vec::new();
        loop {
            match r.next_message().await {
                Ok(Some(m)) => out.push(m),
                Ok(None) => return (out, None),
                Err(s) => return (out, Some(s)),
            }
        }
    }

    #[tokio::test]
    async fn messages_split_and_joined_any_way_come_out_whole() {
        let msgs: Vec<_> = (0..6).map(batch).collect();
        let wire: Vec<u8> = msgs.iter().flat_map(framed).collect();
        // Every frame size from one byte (a prefix split over five frames) to all in one.
        for size in [1, 2, 3, 4, 5, 6, 7, 13, 64, 100, wire.len()] {
            let frames = wire.chunks(size).map(|c| c.to_vec()).collect();
            let trailers = http_body::Frame::trailers(HeaderMap::new());
            let (got, err) = all(body(frames, Some(Ok(trailers))), 1 << 20).await;
            assert!(err.is_none(), "{size}: {err:?}");
            let want: Vec<_> = msgs.iter().map(|m| (m.clone(), m.encoded_len())).collect();
            assert_eq!(got, want, "frames of {size} bytes");
        }
    }

    #[tokio::test]
    async fn metric_batches_keep_the_bytes_they_came_in() {
        // Two messages of another encoder (a field this daemon does not know at the end): kept
        // byte for byte, whether a frame holds them whole or they are gathered.
        let msgs: Vec<Vec<u8>> = (1..3)
            .map(|i| {
                let series = vec![pb::Series {
                    name: format!("m{i}"),
                    timestamps_ms: vec![i],
                    values: vec![1.0],
                    ..Default::default()
                }];
                let mut b = pb::MetricBatch { service: "svc".into(), seq: i as u64, series, ..Default::default() }
                    .encode_to_vec();
                b.extend([0x78, 0x2a]);
                b
            })
            .collect();
        let wire: Vec<u8> = msgs.iter().flat_map(|m| framed_bytes(m)).collect();
        for size in [3, wire.len()] {
            let mut r = BodyMessages::<_, SeriesBatch>::new(
                body(wire.chunks(size).map(|c| c.to_vec()).collect(), None),
                1 << 20,
            );
            for m in &msgs {
                let (b, len) = r.next_message().await.unwrap().unwrap();
                assert_eq!((&*b.protobuf(), len), (&m[..], m.len()), "frames of {size} bytes");
            }
            assert!(r.next_message().await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn a_message_over_the_limit_names_it_and_the_ones_before_stand() {
        let (small, big) = (batch(1), batch(50));
        let mut wire = framed(&small);
        wire.extend(framed(&big));
        // At the limit a message is read; one byte over, it is refused.
        let (got, err) = all(body(vec![wire.clone()], None), big.encoded_len()).await;
        assert!(got.len() == 2 && err.is_none(), "{err:?}");
        let limit = big.encoded_len() - 1;
        let (got, err) = all(body(vec![wire], None), limit).await;
        assert_eq!(got.len(), 1);
        let s = err.unwrap();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            format!("message of {} bytes exceeds limits.max_message_bytes = {limit}", big.encoded_len())
        );
    }

    #[tokio::test]
    async fn bad_framing_is_an_error_and_a_clean_end_is_not() {
        let ok = framed(&batch(2));
        // Cut inside the prefix and inside the body.
        for cut in [2, PREFIX + 3] {
            let (got, err) = all(body(vec![ok[..cut].to_vec()], None), 1 << 20).await;
            assert!(got.is_empty());
            assert_eq!(err.unwrap().message(), "the stream ended inside a message");
        }
        // Compressed and unknown flags.
        for (flag, says) in [(1, "compressed-flag"), (7, "invalid compression flag: 7")] {
            let mut m = ok.clone();
            m[0] = flag;
            let err = all(body(vec![m], None), 1 << 20).await.1.unwrap();
            assert_eq!(err.code(), Code::Internal);
            assert!(err.message().contains(says), "{}", err.message());
        }
        // Bytes that are not the message.
        let mut junk = vec![0, 0, 0, 0, 3];
        junk.extend([0xff, 0xff, 0xff]);
        let err = all(body(vec![junk], None), 1 << 20).await.1.unwrap();
        assert_eq!(err.code(), Code::Internal);
        // An empty message is a message; a body error ends with it; a cancel is an end.
        let empty = vec![0, 0, 0, 0, 0];
        let (got, err) = all(body(vec![empty.clone()], Some(Err(Status::data_loss("gone")))), 1 << 20).await;
        assert_eq!((got.len(), err.unwrap().code()), (1, Code::DataLoss));
        let (got, err) = all(body(vec![empty], Some(Err(Status::cancelled("bye")))), 1 << 20).await;
        assert_eq!(got.len(), 1);
        assert!(err.is_none());
    }

    #[test]
    fn only_identity_encoding_is_accepted() {
        let mut h = HeaderMap::new();
        assert!(unsupported_encoding(&h).is_none());
        h.insert("grpc-encoding", "identity".parse().unwrap());
        assert!(unsupported_encoding(&h).is_none());
        h.insert("grpc-encoding", "gzip".parse().unwrap());
        let s = unsupported_encoding(&h).unwrap();
        assert_eq!(s.code(), Code::Unimplemented);
        assert!(s.message().contains("`gzip`"));
    }
}
