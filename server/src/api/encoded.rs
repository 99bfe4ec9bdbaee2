//! WatchRollout's events encoded once: the message its streams send (a `steerer.v1.RolloutEvent`
//! already in protobuf, its bytes shared by every stream that sends the same event) and the
//! codec that writes such messages as they are.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes};
use prost::Message;
use steerer::v1 as pb;
use tonic::Status;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic_prost::ProstDecoder;

use super::convert;
use crate::events::SharedEvent;

/// A `steerer.v1.RolloutEvent` in protobuf; cloning shares the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent(Bytes);

impl EncodedEvent {
    /// The encoding of `event`.
    pub fn new(event: &pb::RolloutEvent) -> Self {
        Self(Bytes::from(event.encode_to_vec()))
    }

    /// The encoding of a hub's event: converted and encoded by the first stream that sends
    /// it, the same bytes for every other.
    pub fn of(event: &SharedEvent) -> Self {
        Self(event.encoded(|e| Self::new(&convert::event(e)).0))
    }

    /// The protobuf bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

impl AsRef<[u8]> for EncodedEvent {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A codec that sends messages already encoded (`T`: their bytes) and decodes requests (`U`)
/// with prost.
#[derive(Debug)]
pub struct EncodedCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for EncodedCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for EncodedCodec<T, U>
where
    T: AsRef<[u8]> + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = EncodedEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Writes a message's bytes as they are.
#[derive(Debug)]
pub struct EncodedEncoder<T>(PhantomData<T>);

impl<T: AsRef<[u8]>> Encoder for EncodedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(item.as_ref());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use steerer::v1::rollout_service_client::RolloutServiceClient;
    use tokio::net::TcpListener;
    use tonic::transport::Channel;

    use super::*;
    use crate::domain::{
        Breaches, CheckKind, CheckOutcome, CheckResult, EventKind, Phase, RolloutEvent,
    };

    fn check_failed() -> RolloutEvent {
        RolloutEvent {
            rollout_id: "r1".into(),
            sequence: 7,
            time: chrono::Utc::now(),
            kind: EventKind::CheckFailed,
            phase: Phase::Progressing,
            canary_weight: 30,
            success_rate: Some(91.5),
            request_rate: Some(12.25),
            failed_checks: 2,
            message: "success rate 91.5% below 99%".into(),
            latency_p99_ms: Some(420.0),
            failed: Breaches {
                success_rate: true,
                latency_p99: false,
            },
            checks: vec![CheckResult {
                kind: CheckKind::SuccessRate,
                name: "success_rate".into(),
                value: Some(91.5),
                min: Some(99.0),
                max: None,
                outcome: CheckOutcome::Failed,
                detail: "below the threshold".into(),
                baseline: None,
            }],
        }
    }

    #[test]
    fn a_shared_event_is_encoded_once_into_what_its_conversion_encodes_to() {
        let event = check_failed();
        let shared = SharedEvent::new(event.clone());
        let first = EncodedEvent::of(&shared);
        let second = EncodedEvent::of(&shared);
        // One allocation for every stream: the same bytes, not a copy.
        assert_eq!(first.bytes().as_ptr(), second.bytes().as_ptr());
        let decoded = pb::RolloutEvent::decode(first.bytes().clone()).unwrap();
        assert_eq!(decoded, convert::event(&event));
        assert_eq!(first, EncodedEvent::new(&convert::event(&event)));

        let calls = AtomicUsize::new(0);
        let other = SharedEvent::new(event);
        for _ in 0..3 {
            other.encoded(|e| {
                calls.fetch_add(1, Ordering::Relaxed);
                EncodedEvent::new(&convert::event(e)).0
            });
        }
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    async fn connect(addr: std::net::SocketAddr) -> RolloutServiceClient<Channel> {
        for _ in 0..100 {
            if let Ok(client) = RolloutServiceClient::connect(format!("http://{addr}")).await {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server at {addr} did not listen");
    }

    /// Through the whole server and a generated client: every watcher gets every event of the
    /// rollout, each decoding to the conversion of the recorded event.
    #[tokio::test]
    async fn watchers_through_a_tonic_client_get_the_recorded_events() {
        let crate::api::proptests::Fakes { store, ports, .. } = crate::api::proptests::fakes();
        let config = crate::ServerConfig {
            prometheus_url: "http://127.0.0.1:9".into(),
            metrics_window: Duration::from_secs(1),
            scale_down_delay: Duration::ZERO,
            ..crate::ServerConfig::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve_with(config, listener, ports, async move {
            let _ = stopped.await;
        }));
        let mut client = connect(addr).await;

        let id = client
            .start_rollout(pb::StartRolloutRequest {
                namespace: "test".into(),
                target: "podinfo".into(),
                analysis: Some(pb::Analysis {
                    interval: Some(prost_types::Duration {
                        seconds: 3600,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        let mut watchers = Vec::new();
        for _ in 0..3 {
            let mut client = client.clone();
            let id = id.clone();
            let stream = client
                .watch_rollout(pb::WatchRolloutRequest {
                    id,
                    from_sequence: 0,
                })
                .await
                .unwrap()
                .into_inner();
            watchers.push(tokio::spawn(async move {
                let mut stream = stream;
                let mut got = Vec::new();
                while let Some(event) = stream.message().await.unwrap() {
                    got.push(event);
                }
                got
            }));
        }
        // Live events after the watches opened, through to the terminal one.
        client
            .abort_rollout(pb::AbortRolloutRequest {
                id: id.clone(),
                reason: "enough".into(),
            })
            .await
            .unwrap();

        let mut seen = Vec::new();
        for watcher in watchers {
            let got = tokio::time::timeout(Duration::from_secs(20), watcher)
                .await
                .expect("the watch ended after the terminal event")
                .unwrap();
            seen.push(got);
        }
        // Every event is recorded before it is published.
        let (_, recorded) = store.get(&id).unwrap();
        let expected: Vec<pb::RolloutEvent> = recorded.iter().map(convert::event).collect();
        assert_eq!(expected.last().unwrap().phase, pb::Phase::Aborted as i32);
        assert!(expected.len() >= 3, "{expected:?}");
        for got in seen {
            assert_eq!(got, expected);
        }
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    }
}
