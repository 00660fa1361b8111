//! The JetStream door: a durable pull consumer with explicit acks. Every
//! message is handled in a task of its own, up to [`IN_FLIGHT`] at once, and
//! answered with the verdict on it: ack, nak with a delay, or term.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use tokio::task::JoinSet;

use super::{handle, App, Verdict, IN_FLIGHT};

/// How long one pull waits for messages before asking again.
const PULL_WAIT: Duration = Duration::from_millis(500);

/// Where to consume: the server, the stream and consumer name (`NAME`, with
/// subjects `NAME.>`), and how long a delivery may stay unacknowledged
/// before JetStream redelivers it.
pub struct Source {
    /// `--nats-url`.
    pub url: String,
    /// `--name`.
    pub name: String,
    /// `--ack-wait-ms`.
    pub ack_wait: Duration,
}

/// The stream `NAME` (subjects `NAME.>`) and its durable pull consumer
/// `NAME`, each created if missing.
pub async fn consumer(js: &jetstream::Context, source: &Source) -> Result<PullConsumer, String> {
    let name = &source.name;
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await
        .map_err(|e| format!("JetStream stream `{name}`: {e}"))?;
    stream
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: source.ack_wait,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("JetStream consumer `{name}`: {e}"))
}

/// Consumes until `stop` resolves, then stops pulling, lets the messages in
/// hand finish (and acknowledges them), and returns.
pub async fn consume(
    app: Arc<App>,
    source: Source,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let client = async_nats::connect(source.url.as_str())
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", source.url))?;
    let js = jetstream::new(client.clone());
    let consumer = consumer(&js, &source).await?;
    println!("consuming {}", source.name);
    let mut running = JoinSet::new();
    tokio::pin!(stop);
    'pulling: loop {
        // Pull only what there is room for: a message waiting in this
        // process would see its ack wait run out before it is even handled.
        while running.len() >= IN_FLIGHT {
            running.join_next().await;
        }
        let batch = consumer
            .batch()
            .max_messages(IN_FLIGHT - running.len())
            .expires(PULL_WAIT)
            .messages();
        let mut batch = tokio::select! {
            () = &mut stop => break,
            batch = batch => match batch {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(target: "orders", error = %e, "pulling from JetStream failed; retrying");
                    tokio::time::sleep(PULL_WAIT).await;
                    continue;
                }
            },
        };
        loop {
            let message = tokio::select! {
                () = &mut stop => break 'pulling,
                message = batch.next() => message,
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    tracing::warn!(target: "orders", error = %e, "pulling a message failed");
                    break;
                }
                None => break,
            };
            let app = app.clone();
            running.spawn(async move {
                let answer = match handle(&app, &message.payload).await {
                    Verdict::Ack => message.ack().await,
                    Verdict::Retry(delay) => message.ack_with(AckKind::Nak(Some(delay))).await,
                    Verdict::Drop => message.ack_with(AckKind::Term).await,
                };
                if let Err(e) = answer {
                    tracing::warn!(target: "orders", error = %e, "answering JetStream failed; it redelivers after ack_wait");
                }
            });
        }
    }
    while running.join_next().await.is_some() {}
    // The acknowledgements are buffered: out before the process exits.
    client
        .flush()
        .await
        .map_err(|e| format!("flushing the acknowledgements: {e}"))
}
