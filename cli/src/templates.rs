//! `notify templates push <dir>`: template files to the compacted templates topic.
//!
//! Layout: `<dir>/<template_id>/<CHANNEL>.<locale>.toml`, e.g. `invoice_due/EMAIL.pt-BR.toml`,
//! holding `title`, `body`, `html_body` and `truncate`. Each file becomes one Avro `Template`
//! keyed `template_id/CHANNEL/locale`. Every bad file is reported (with its path) before
//! anything is produced, so a typo never publishes half a set.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use notify_runtime::Config;
use notify_runtime::codec::AvroCodec;
use notify_runtime::records::{Channel, Template};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;

/// One file's content.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    #[serde(default)]
    title: Option<String>,
    body: String,
    #[serde(default)]
    html_body: Option<String>,
    #[serde(default)]
    truncate: bool,
}

/// Reads every template under `dir`, sorted by key. Errors name each bad file.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<Template>> {
    let mut templates = Vec::new();
    let mut errors = Vec::new();
    let ids = std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for id_entry in ids {
        let id_dir = id_entry?.path();
        if !id_dir.is_dir() {
            continue;
        }
        let Some(template_id) = id_dir
            .file_name()
            .and_then(|n| n.to_str())
            .map(String::from)
        else {
            errors.push(format!("{}: not a UTF-8 name", id_dir.display()));
            continue;
        };
        for file in std::fs::read_dir(&id_dir)? {
            let path = file?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            match load_file(&template_id, &path) {
                Ok(t) => templates.push(t),
                Err(e) => errors.push(format!("{}: {e}", path.display())),
            }
        }
    }
    if !errors.is_empty() {
        anyhow::bail!(
            "{} bad template file(s):\n  {}",
            errors.len(),
            errors.join("\n  ")
        );
    }
    templates.sort_by_key(Template::key);
    Ok(templates)
}

fn load_file(template_id: &str, path: &PathBuf) -> Result<Template, String> {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("not a UTF-8 name")?;
    let (channel, locale) = stem
        .split_once('.')
        .ok_or("name must be <CHANNEL>.<locale>.toml")?;
    let channel = match channel.to_ascii_uppercase().as_str() {
        "PUSH" => Channel::Push,
        "SMS" => Channel::Sms,
        "EMAIL" => Channel::Email,
        other => return Err(format!("unknown channel {other:?} (PUSH, SMS, EMAIL)")),
    };
    if locale.is_empty() || locale.contains(['/', '.']) {
        return Err(format!("bad locale {locale:?}"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let file: TemplateFile = toml::from_str(&text).map_err(|e| e.to_string())?;
    Ok(Template {
        template_id: template_id.to_string(),
        channel,
        locale: locale.to_string(),
        title: file.title,
        body: file.body,
        html_body: file.html_body,
        truncate: file.truncate,
    })
}

/// Produces `templates` to `topic` and waits for every acknowledgement.
pub async fn push(config: &Config, topic: &str, templates: &[Template]) -> anyhow::Result<usize> {
    let codec = AvroCodec::new(&config.registry)?;
    let producer: FutureProducer = notify_runtime::kafka::producer_config(config).create()?;
    let mut progress =
        crate::progress::Progress::new("templates pushed", Some(templates.len() as u64));
    for t in templates {
        let key = t.key();
        let value = codec
            .encode(topic, t)
            .await
            .with_context(|| format!("encoding {key}"))?;
        producer
            .send(
                FutureRecord::to(topic).key(key.as_str()).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("{key} not acknowledged: {e}"))?;
        progress.inc(1);
    }
    progress.finish();
    Ok(templates.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_the_layout_and_reports_every_bad_file() {
        let dir = std::env::temp_dir().join(format!("notify-tpl-{}", rand_suffix()));
        std::fs::create_dir_all(dir.join("welcome")).unwrap();
        std::fs::write(
            dir.join("welcome/EMAIL.pt-BR.toml"),
            "title = \"Olá {{ name }}\"\nbody = \"b\"\nhtml_body = \"<p>b</p>\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("welcome/SMS.en.toml"),
            "body = \"hi\"\ntruncate = true\n",
        )
        .unwrap();
        let got = load_dir(&dir).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].key(), "welcome/EMAIL/pt-BR");
        assert_eq!(got[0].title.as_deref(), Some("Olá {{ name }}"));
        assert!(got[1].truncate);
        std::fs::write(dir.join("welcome/FAX.en.toml"), "body = \"x\"").unwrap();
        std::fs::write(dir.join("welcome/PUSH.en.toml"), "bdy = \"x\"").unwrap();
        let err = load_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("2 bad template file(s)"), "{err}");
        assert!(err.contains("FAX"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    }

    #[test]
    fn the_demo_templates_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev/templates");
        let got = load_dir(&dir).unwrap();
        for id in ["invoice_due", "parcel_shipped", "new_login"] {
            for locale in ["en", "pt-BR"] {
                for channel in ["PUSH", "SMS", "EMAIL"] {
                    let key = format!("{id}/{channel}/{locale}");
                    assert!(got.iter().any(|t| t.key() == key), "missing {key}");
                }
            }
        }
    }
}
