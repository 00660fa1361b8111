//! The RabbitMQ door: a consumer with manual acks and a prefetch of
//! [`IN_FLIGHT`]. Every delivery is handled in a task of its own and
//! answered with the verdict on it: ack, requeue after a delay, or reject
//! without requeue.

use std::future::Future;
use std::sync::Arc;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::task::JoinSet;

use super::{handle, App, Verdict, IN_FLIGHT};

/// A channel on the server at `url`, with the durable queue `name`
/// declared.
pub async fn channel(url: &str, name: &str) -> Result<(Connection, Channel), String> {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| format!("cannot connect to RabbitMQ at {url}: {e}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| format!("RabbitMQ channel: {e}"))?;
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("RabbitMQ queue `{name}`: {e}"))?;
    Ok((connection, channel))
}

/// Consumes the queue `name` until `stop` resolves, then cancels the
/// consumer, lets the deliveries in hand finish (and acknowledges them),
/// and returns.
pub async fn consume(
    app: Arc<App>,
    url: &str,
    name: &str,
    stop: impl Future<Output = ()>,
) -> Result<(), String> {
    let (connection, channel) = channel(url, name).await?;
    channel
        .basic_qos(IN_FLIGHT as u16, BasicQosOptions::default())
        .await
        .map_err(|e| format!("RabbitMQ prefetch: {e}"))?;
    let mut consumer = channel
        .basic_consume(
            name.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("consuming `{name}`: {e}"))?;
    println!("consuming {name}");
    let mut running = JoinSet::new();
    tokio::pin!(stop);
    loop {
        let delivery = tokio::select! {
            () = &mut stop => break,
            delivery = consumer.next() => delivery,
        };
        let delivery = match delivery {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => return Err(format!("RabbitMQ consumer: {e}")),
            None => break,
        };
        let app = app.clone();
        running.spawn(async move {
            let answer = match handle(&app, &delivery.data).await {
                Verdict::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
                Verdict::Retry(delay) => {
                    // Held for the delay (its prefetch slot with it), then
                    // requeued: RabbitMQ itself redelivers at once.
                    tokio::time::sleep(delay).await;
                    delivery
                        .acker
                        .nack(BasicNackOptions {
                            requeue: true,
                            ..Default::default()
                        })
                        .await
                }
                Verdict::Drop => {
                    delivery
                        .acker
                        .reject(BasicRejectOptions { requeue: false })
                        .await
                }
            };
            if let Err(e) = answer {
                tracing::warn!(target: "orders", error = %e, "answering RabbitMQ failed; it redelivers when the channel closes");
            }
        });
        // Reap the finished ones as we go.
        while running.try_join_next().is_some() {}
    }
    let _ = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await;
    while running.join_next().await.is_some() {}
    let _ = channel.close(200, "bye".into()).await;
    let _ = connection.close(200, "bye".into()).await;
    Ok(())
}
