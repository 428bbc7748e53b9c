//! The in-process channel's acknowledgement path, driven through the engine's `TestInlet`
//! with chosen outcomes: the writing sink hears exactly what became of the message in the
//! consuming flow, so the upstream source is acknowledged or delivers again accordingly.

use super::*;
use serde_json::json;
use sluice_engine::Payload;
use sluice_engine::testing::TestInlet;

/// A channel sink and the trigger reading the same channel, as two flows would have them.
fn channel(name: &str) -> (ChannelSink, Box<ChannelTrigger>) {
    let hub = ChannelHub::default();
    let queue = hub.queue(name);
    let sink = ChannelSink {
        name: name.to_owned(),
        tx: queue.0.clone(),
        timeout: Duration::from_secs(30),
    };
    let trigger = Box::new(ChannelTrigger {
        name: name.to_owned(),
        queue,
    });
    (sink, trigger)
}

fn outgoing(id: &str) -> Outgoing {
    let meta = Meta::from([
        ("message_id".to_owned(), id.to_owned()),
        ("flow".to_owned(), "producer".to_owned()),
        ("secret.note".to_owned(), "upstream only".to_owned()),
    ]);
    Outgoing {
        payload: Payload::from_json(json!({ "id": id })),
        meta: Arc::new(meta),
    }
}

/// Writes `out` on its own task (the write waits for the consumer's outcome); the task gives
/// the sink and the message back with the result, for the writer's next attempt.
fn write(
    sink: ChannelSink,
    mut out: Outgoing,
) -> tokio::task::JoinHandle<(ChannelSink, Outgoing, Result<(), FlowError>)> {
    tokio::spawn(async move {
        let result = sink.write(&mut out).await;
        (sink, out, result)
    })
}

#[tokio::test]
async fn a_failure_not_settled_fails_the_write_and_a_delivery_confirms_the_retry() {
    let (sink, trigger) = channel("orders");
    let mut flow = TestInlet::new("consumer", 4);
    let stop = CancellationToken::new();
    let running = tokio::spawn(trigger.run(flow.inlet().expect("a fresh inlet"), stop.clone()));

    let writing = write(sink, outgoing("o-1"));
    let envelope = flow
        .next()
        .await
        .expect("the channel hands the message over");
    assert_eq!(
        envelope.message.meta.message_id(),
        "o-1",
        "the message keeps its id"
    );
    let meta = &envelope.message.meta;
    assert_eq!(meta.get("channel.name").map(String::as_str), Some("orders"));
    assert_eq!(
        meta.get("channel.from").map(String::as_str),
        Some("producer")
    );
    assert_eq!(meta.get("flow").map(String::as_str), Some("consumer"));
    assert!(
        !meta.contains_key("secret.note"),
        "the upstream flow's metadata stays upstream: {meta:?}"
    );

    // The consuming flow's sink failed and no dead letter took the message.
    let error = FlowError::new(ErrorKind::Sink, "the warehouse is away");
    let failed = flow.failed(&envelope.message, error, 3, false);
    assert!(!failed.settled());
    envelope.ack.ack(failed).await;
    let (sink, out, result) = writing.await.expect("the write task");
    let error = result.expect_err("the writer learns that the message was not processed");
    assert!(
        error.retryable,
        "so that the upstream flow retries: {error:?}"
    );
    assert_eq!(error.kind, ErrorKind::Sink, "{error:?}");
    assert!(
        error.message.contains("the consuming flow failed") && error.message.contains("away"),
        "{error:?}"
    );

    // The upstream retry delivers the same message again; this time it is delivered.
    let writing = write(sink, out);
    let envelope = flow.next().await.expect("the message comes again");
    assert_eq!(envelope.message.meta.message_id(), "o-1");
    envelope.ack.ack(TestInlet::delivered()).await;
    let (_, _, result) = writing.await.expect("the write task");
    assert!(
        result.is_ok(),
        "delivered downstream: confirmed upstream: {result:?}"
    );

    assert!(flow.try_next().is_none(), "nothing else was sent");
    stop.cancel();
    running.await.expect("the trigger stops when told");
}

#[tokio::test]
async fn a_dead_lettered_failure_confirms_the_write_and_a_dropped_ack_fails_it() {
    let (sink, trigger) = channel("audit");
    let mut flow = TestInlet::new("consumer", 4);
    let stop = CancellationToken::new();
    let running = tokio::spawn(trigger.run(flow.inlet().expect("a fresh inlet"), stop.clone()));

    let writing = write(sink, outgoing("a-1"));
    let envelope = flow
        .next()
        .await
        .expect("the channel hands the message over");
    let error = FlowError::permanent(ErrorKind::Contract, "no `id`");
    let dead = flow.failed(&envelope.message, error, 1, true);
    assert!(dead.settled());
    envelope.ack.ack(dead).await;
    let (sink, _, result) = writing.await.expect("the write task");
    assert!(
        result.is_ok(),
        "the dead letter has it: the upstream source is done with it: {result:?}"
    );

    // The consuming flow stops with the message in hand: its acker is dropped unanswered.
    let writing = write(sink, outgoing("a-2"));
    let envelope = flow
        .next()
        .await
        .expect("the channel hands the message over");
    assert_eq!(envelope.message.meta.message_id(), "a-2");
    drop(envelope);
    let (_, _, result) = writing.await.expect("the write task");
    let error = result.expect_err("an unanswered message is not confirmed");
    assert!(error.retryable, "{error:?}");
    assert!(
        error.message.contains("stopped before finishing"),
        "{error:?}"
    );

    stop.cancel();
    running.await.expect("the trigger stops when told");
}
