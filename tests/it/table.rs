//! The runtime's local table of a compacted topic, against the real broker.

use std::time::{Duration, Instant};

use notify_runtime::Table;
use notify_runtime::records::UserProfile;
use notify_tests::TestEnv;

fn profile(user: &str, locale: &str) -> UserProfile {
    UserProfile {
        user_id: user.into(),
        email: Some(format!("{user}@example.com")),
        phone: None,
        devices: vec![],
        locale: locale.into(),
        timezone: "UTC".into(),
        opt_out_channels: vec![],
        opt_out_categories: vec![],
        quiet_hours: None,
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
    let table: Table<UserProfile> = Table::new(&env.config, &topic).await.expect("table");
    table.assign_all();
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

    // Co-partitioned use: revoking a partition forgets its rows.
    let all = table.len();
    table.revoke(&[0, 1, 2]);
    assert_eq!(table.len(), 0);
    table.assign(&[0, 1, 2]);
    assert!(
        table.sync(Instant::now(), Duration::from_secs(30)).await,
        "rebuilt after re-assign"
    );
    assert_eq!(table.len(), all);
}
