//! The runtime's local table of a compacted topic, against the real broker.

use std::time::{Duration, Instant};

use notify_runtime::Table;
use notify_runtime::records::UserProfile;
use notify_tests::TestEnv;
use notify_tests::records;

fn profile(user: &str, locale: &str) -> UserProfile {
    UserProfile {
        email: Some(format!("{user}@example.com")),
        locale: locale.into(),
        ..records::profile(user, vec![])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn table_sees_every_update_written_before_a_sync() {
    let env = TestEnv::new("table").await;
    let [topic] = env.create_topics(&[("users", 3)]).await.try_into().unwrap();
    for i in 0..50 {
        let user = format!("u{i}");
        env.produce(&topic, &user, &profile(&user, "en")).await;
    }
    let table: Table<UserProfile> = Table::global(&env.config, &topic).await.expect("table");
    assert!(
        table.sync(Instant::now(), Duration::from_secs(30)).await,
        "initial load"
    );
    assert_eq!(table.len(), 50);
    assert_eq!(
        table.get("u7").map(|p| p.locale.clone()),
        Some("en".to_string())
    );

    // An update, then a sync started after it: the update is visible, no sleeping involved.
    env.produce(&topic, "u7", &profile("u7", "pt-BR")).await;
    env.produce_bytes(&topic, Some("u8"), None, None, &[]).await;
    assert!(
        table.sync(Instant::now(), Duration::from_secs(30)).await,
        "caught up"
    );
    assert_eq!(
        table.get("u7").map(|p| p.locale.clone()),
        Some("pt-BR".to_string())
    );
    assert!(table.get("u8").is_none(), "tombstone deletes");
    assert_eq!(table.len(), 49);

    // Poison in a table topic is skipped and counted, not fatal.
    env.produce_bytes(&topic, Some("u9"), Some(b"not avro"), None, &[])
        .await;
    assert!(table.sync(Instant::now(), Duration::from_secs(30)).await);
    assert_eq!(table.bad_records(), 1);
    assert!(
        table.get("u9").is_some(),
        "a bad record keeps the previous row"
    );
}

/// Rows owned by input partitions are found wherever a producer's partitioner put them (a
/// Python or Go producer, CRC32, next to Java's murmur2), and move with the partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_owned_table_keeps_the_users_of_its_partitions_from_every_partition() {
    let env = TestEnv::new("table_owned").await;
    let [topic] = env.create_topics(&[("users", 4)]).await.try_into().unwrap();
    let input_partitions = 8;
    for i in 0..40 {
        let user = format!("u{i}");
        let partitioner = if i % 2 == 0 {
            "consistent_random"
        } else {
            "murmur2_random"
        };
        env.produce_partitioned(partitioner, &topic, &user, &profile(&user, "en"))
            .await;
    }
    let table: Table<UserProfile> =
        Table::owned(&env.config, &topic, input_partitions, |k, _| k.to_string())
            .await
            .expect("table");
    let owner = |u: &str| notify_runtime::partitioner::partition_for(u, input_partitions);
    let mine: Vec<i32> = (0..4).collect();
    table.assign(&mine);
    assert!(
        table.sync(Instant::now(), Duration::from_secs(30)).await,
        "loaded"
    );
    let expected: Vec<String> = (0..40)
        .map(|i| format!("u{i}"))
        .filter(|u| mine.contains(&owner(u)))
        .collect();
    assert_eq!(
        table.len(),
        expected.len(),
        "only the users of partitions 0-3"
    );
    for u in &expected {
        assert!(
            table.get(u).is_some(),
            "{u} (owned by {}) missing",
            owner(u)
        );
    }
    // A later update written with the other partitioner replaces the row (latest wins).
    let u = &expected[0];
    env.produce_partitioned("consistent_random", &topic, u, &profile(u, "pt-BR"))
        .await;
    env.produce_partitioned("murmur2_random", &topic, u, &profile(u, "de"))
        .await;
    assert!(table.sync(Instant::now(), Duration::from_secs(30)).await);
    assert_eq!(table.get(u).map(|p| p.locale.clone()), Some("de".into()));
    // Partitions move: their users go, the new ones' users are loaded.
    table.revoke(&[0, 1]);
    table.assign(&[4, 5]);
    assert!(table.sync(Instant::now(), Duration::from_secs(30)).await);
    let now_mine = [2, 3, 4, 5];
    let expected = (0..40)
        .map(|i| format!("u{i}"))
        .filter(|u| now_mine.contains(&owner(u)))
        .count();
    assert_eq!(table.len(), expected);
}
