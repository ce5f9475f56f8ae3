use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use notify_providers::{
    ApnsClient, ApnsConfig, ChannelMessage, FcmClient, FcmConfig, SendOutcome, ServiceAccount,
};
use notify_runtime::records::{DeliveryChannel, Priority};
use notify_sandbox::{SandboxHandle, TestCredentials};

pub const DEVICE: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
pub const TOPIC: &str = "com.example.notify";

/// RSA key generation is slow in debug builds, so the keys are made once per test binary.
pub fn creds() -> &'static TestCredentials {
    static CREDS: OnceLock<TestCredentials> = OnceLock::new();
    CREDS.get_or_init(|| TestCredentials::generate().expect("test credentials"))
}

/// Another set of keys the sandbox does not know.
pub fn other_creds() -> &'static TestCredentials {
    static CREDS: OnceLock<TestCredentials> = OnceLock::new();
    CREDS.get_or_init(|| TestCredentials::generate().expect("test credentials"))
}

pub async fn sandbox() -> SandboxHandle {
    let listen = "127.0.0.1:0".parse().expect("addr");
    notify_sandbox::serve(creds().sandbox_config(listen))
        .await
        .expect("sandbox starts")
}

pub fn message(channel: DeliveryChannel, recipient: &str) -> ChannelMessage {
    ChannelMessage {
        event_id: format!("evt-{}", uuid::Uuid::new_v4()),
        user_id: "user-1".into(),
        category: "shipping".into(),
        priority: Priority::Normal,
        channel,
        recipient: recipient.into(),
        title: Some("Your parcel shipped".into()),
        body: "It arrives on Friday.".into(),
        html_body: Some("<p>It arrives on <b>Friday</b>.</p>".into()),
        data: BTreeMap::from([("order".to_string(), "o-42".to_string())]),
        created_at: 1_700_000_000_000,
        expires_at: None,
    }
}

pub fn apns_client(sb: &SandboxHandle, keys: &TestCredentials, timeout: Duration) -> ApnsClient {
    ApnsClient::new(ApnsConfig {
        base_url: sb.base_url(),
        team_id: creds().apns.team_id.clone(),
        key_id: creds().apns.key_id.clone(),
        private_key_pem: keys.apns_private_key_pem.clone(),
        topic: TOPIC.into(),
        timeout,
    })
    .expect("APNs client")
}

pub fn fcm_client(sb: &SandboxHandle, keys: &TestCredentials) -> FcmClient {
    // The service account's identity is the sandbox's; only the key may differ.
    let mut account = creds().service_account_json(&sb.fcm_token_uri());
    account["private_key"] = keys.fcm_private_key_pem.clone().into();
    let account = ServiceAccount::from_json(&account.to_string()).expect("service account");
    FcmClient::new(FcmConfig {
        base_url: sb.base_url(),
        service_account: account,
        timeout: Duration::from_secs(5),
    })
    .expect("FCM client")
}

pub fn assert_retryable_after(outcome: &SendOutcome, secs: u64) {
    match outcome {
        SendOutcome::Retryable { retry_after, .. } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(secs)), "{outcome:?}")
        }
        other => panic!("expected Retryable, got {other:?}"),
    }
}
