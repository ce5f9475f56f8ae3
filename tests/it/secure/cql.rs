//! The CQL driver's security settings against the real (plaintext) Cassandra: TLS asked for is
//! TLS or no session, never a silent plaintext one; a user without a password is refused.

use notify_tests::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cql_tls_is_never_silently_plaintext_and_a_user_needs_a_password() {
    let env = TestEnv::new("cqltls").await;
    let mut plain = env.config.cql.clone();
    notify_runtime::cql::connect(&plain)
        .await
        .expect("the plaintext stack accepts a plaintext session");

    let mut tls = plain.clone();
    tls.tls = true;
    let Err(err) = notify_runtime::cql::connect(&tls).await else {
        panic!("a TLS session to a plaintext port must fail");
    };
    assert!(err.to_string().contains("cannot connect"), "{err}");

    plain.username = Some("notify".into());
    plain.password = None;
    let Err(err) = notify_runtime::cql::connect(&plain).await else {
        panic!("a user without a password is refused");
    };
    assert!(err.to_string().contains("go together"), "{err}");
}
