//! `notify sandbox`: the provider stand-ins on loopback with credentials on disk, for
//! `make dev` and manual testing. Credentials are loaded from `--creds-dir` when present (so
//! restarts keep the same keys) and generated otherwise; the files the delivery processors
//! read are (re)written each start because the FCM token URI names the listening address.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use notify_runtime::CancellationToken;
use notify_sandbox::TestCredentials;

/// Every file a delivery processor needs to talk to the sandbox.
#[derive(Debug, Clone)]
pub struct SandboxFiles {
    pub credentials: PathBuf,
    pub apns_key: PathBuf,
    pub fcm_service_account: PathBuf,
    pub twilio_auth_token: PathBuf,
    pub sendgrid_api_key: PathBuf,
    /// A `[processors.deliver-*]` configuration pointing at the sandbox.
    pub delivery_config: PathBuf,
}

/// Account ids of generated sandbox credentials. They are public identifiers, pinned so that a
/// fixed configuration (dev/notify.toml) names them; the keys and secrets stay random.
pub const DEV_APNS_KEY_ID: &str = "NOTIFYDEV1";
pub const DEV_APNS_TEAM_ID: &str = "NOTIFYTEAM";
pub const DEV_TWILIO_ACCOUNT_SID: &str = "ACnotifydev";

/// Loads `creds_dir/credentials.json`, or generates fresh credentials with the dev ids.
pub fn load_or_generate(creds_dir: &Path) -> anyhow::Result<TestCredentials> {
    let path = creds_dir.join("credentials.json");
    if path.exists() {
        return TestCredentials::load(&path).with_context(|| format!("loading {}", path.display()));
    }
    let mut creds = TestCredentials::generate()?;
    creds.apns.key_id = DEV_APNS_KEY_ID.into();
    creds.apns.team_id = DEV_APNS_TEAM_ID.into();
    creds.twilio.account_sid = DEV_TWILIO_ACCOUNT_SID.into();
    Ok(creds)
}

/// Writes the credential files for a sandbox at `base_url` into `creds_dir`.
pub fn write_files(
    creds: &TestCredentials,
    creds_dir: &Path,
    base_url: &str,
) -> anyhow::Result<SandboxFiles> {
    let written = creds.write_files(creds_dir, base_url)?;
    let files = SandboxFiles {
        credentials: written.credentials_path,
        apns_key: written.apns_key_path,
        fcm_service_account: written.fcm_service_account_path,
        twilio_auth_token: creds_dir.join("twilio-auth-token"),
        sendgrid_api_key: creds_dir.join("sendgrid-api-key"),
        delivery_config: creds_dir.join("delivery.toml"),
    };
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(&files.twilio_auth_token, &creds.twilio.auth_token)?;
    write(&files.sendgrid_api_key, &creds.sendgrid.api_key)?;
    write(
        &files.delivery_config,
        &delivery_config(creds, &files, base_url),
    )?;
    Ok(files)
}

/// The delivery processors' provider tables for this sandbox (e-mail goes to SendGrid here;
/// `make dev` may point it at the local SMTP server instead).
pub fn delivery_config(creds: &TestCredentials, files: &SandboxFiles, base_url: &str) -> String {
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    format!(
        "[processors.deliver-apns.provider]\nbase_url = {base:?}\nkey_file = {apns}\n\
         key_id = {kid:?}\nteam_id = {team:?}\ntopic = \"com.example.notify\"\n\n\
         [processors.deliver-fcm.provider]\nbase_url = {base:?}\nservice_account_file = {fcm}\n\n\
         [processors.deliver-sms.provider]\nbase_url = {base:?}\naccount_sid = {sid:?}\n\
         auth_token_file = {tw}\nfrom = \"+15005550006\"\n\n\
         [processors.deliver-email.provider]\nkind = \"sendgrid\"\nfrom = \"Notify <notify@example.com>\"\n\
         sendgrid_base_url = {base:?}\nsendgrid_api_key_file = {sg}\n",
        base = base_url,
        apns = q(&files.apns_key),
        kid = creds.apns.key_id,
        team = creds.apns.team_id,
        fcm = q(&files.fcm_service_account),
        sid = creds.twilio.account_sid,
        tw = q(&files.twilio_auth_token),
        sg = q(&files.sendgrid_api_key),
    )
}

/// Serves until `shutdown`, printing where everything is.
pub async fn serve(
    listen: SocketAddr,
    creds_dir: &Path,
    keep_messages: Option<usize>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let creds = load_or_generate(creds_dir)?;
    let handle =
        notify_sandbox::serve_with_cancel(creds.sandbox_config(listen), shutdown.clone()).await?;
    if let Some(n) = keep_messages {
        handle.keep_messages(n);
    }
    let base_url = handle.base_url();
    let files = write_files(&creds, creds_dir, &base_url)?;
    println!("provider sandbox listening on {base_url}");
    println!("  messages:          {base_url}/sandbox/messages");
    println!("  faults:            {base_url}/sandbox/faults");
    println!("  FCM token URI:     {}", handle.fcm_token_uri());
    println!("  credentials:       {}", files.credentials.display());
    println!(
        "  APNs key:          {} (key id {}, team {})",
        files.apns_key.display(),
        creds.apns.key_id,
        creds.apns.team_id
    );
    println!(
        "  FCM account:       {}",
        files.fcm_service_account.display()
    );
    println!(
        "  Twilio token:      {} (account {})",
        files.twilio_auth_token.display(),
        creds.twilio.account_sid
    );
    println!("  SendGrid key:      {}", files.sendgrid_api_key.display());
    println!("  delivery config:   {}", files.delivery_config.display());
    shutdown.cancelled().await;
    handle.shutdown().await;
    println!("provider sandbox stopped");
    Ok(())
}
