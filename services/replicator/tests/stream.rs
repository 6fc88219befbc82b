//! The CDC stream's replicas and retention against a real nats-server: created
//! with the configured limits, updated in place when they change, and a replica
//! count a single server cannot have is a clear `StreamConfig` error.

use std::time::Duration;

use async_nats::jetstream::{self, stream::StorageType};
use shardline_devkit::{NatsOptions, NatsServer};
use shardline_replicator::setup::{StreamLimits, ensure_stream};
use shardline_replicator::{ReplicatorError, STREAM};

const WINDOW: Duration = Duration::from_secs(120);
const HOUR: Duration = Duration::from_secs(3600);

async fn stored(js: &jetstream::Context) -> jetstream::stream::Config {
    let mut s = js.get_stream(STREAM).await.unwrap();
    s.info().await.unwrap().config.clone()
}

#[tokio::test]
async fn stream_limits_are_applied_and_updated_in_place() {
    let nats = NatsServer::start_temp(NatsOptions::default())
        .await
        .expect("nats-server (set SHARDLINE_NATS_SERVER)");
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());

    // Created with a max age.
    let week = StreamLimits {
        max_age: Some(7 * 24 * HOUR),
        ..StreamLimits::default()
    };
    ensure_stream(&js, WINDOW, &week).await.unwrap();
    let c = stored(&js).await;
    assert_eq!(c.max_age, 7 * 24 * HOUR);
    assert_eq!(c.num_replicas, 1);
    assert!(c.max_bytes <= 0, "no size limit: {}", c.max_bytes);
    js.publish("shardline.cdc.s1", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();

    // Again with the same settings: nothing to do.
    ensure_stream(&js, WINDOW, &week).await.unwrap();
    assert_eq!(stored(&js).await, c);

    // A changed max age and a size limit: updated in place, the rest intact.
    let day = StreamLimits {
        max_age: Some(24 * HOUR),
        max_bytes: Some(1 << 30),
        ..StreamLimits::default()
    };
    let returned = ensure_stream(&js, WINDOW, &day).await.unwrap();
    let c = stored(&js).await;
    assert_eq!(returned, c);
    assert_eq!(c.max_age, 24 * HOUR);
    assert_eq!(c.max_bytes, 1 << 30);
    assert_eq!(c.subjects, vec!["shardline.cdc.>".to_owned()]);
    assert_eq!(c.storage, StorageType::File);
    assert_eq!(c.duplicate_window, WINDOW);
    let mut s = js.get_stream(STREAM).await.unwrap();
    assert_eq!(s.info().await.unwrap().state.messages, 1, "messages kept");

    // Back to no limits.
    ensure_stream(&js, WINDOW, &StreamLimits::default())
        .await
        .unwrap();
    let c = stored(&js).await;
    assert_eq!(c.max_age, Duration::ZERO);
    assert!(c.max_bytes <= 0);

    // Three replicas on a single server: refused, clearly, and nothing changed.
    let three = StreamLimits {
        replicas: 3,
        max_age: Some(HOUR),
        ..StreamLimits::default()
    };
    let err = ensure_stream(&js, WINDOW, &three).await.unwrap_err();
    assert!(
        matches!(err, ReplicatorError::StreamConfig { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("1 replica(s), 3 configured"),
        "{err}"
    );
    assert_eq!(stored(&js).await, c);

    // Settings the stream cannot have.
    for bad in [
        StreamLimits {
            replicas: 0,
            ..StreamLimits::default()
        },
        StreamLimits {
            replicas: 6,
            ..StreamLimits::default()
        },
        StreamLimits {
            max_age: Some(Duration::from_secs(60)),
            ..StreamLimits::default()
        },
        StreamLimits {
            max_bytes: Some(0),
            ..StreamLimits::default()
        },
    ] {
        let err = ensure_stream(&js, WINDOW, &bad).await.unwrap_err();
        assert!(
            matches!(err, ReplicatorError::StreamConfig { .. }),
            "{bad:?}: {err:?}"
        );
    }
}
