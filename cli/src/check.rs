//! `notify run <p> --check-config`: what start-up checks, without connecting to anything.
//! The processor's own table is checked by its crate (`Settings::check`); this module checks
//! what every processor shares: the librdkafka properties as librdkafka itself parses them,
//! the files they name, and SASL credentials.

use std::collections::BTreeMap;

use notify_runtime::Config;
use rdkafka::ClientConfig;

/// Every problem of the shared sections, each naming the setting.
pub fn shared(config: &Config) -> Vec<String> {
    let kafka = &config.kafka;
    let mut errors = Vec::new();
    for (client, own) in [("consumer", &kafka.consumer), ("producer", &kafka.producer)] {
        let mut merged: BTreeMap<&str, &str> = BTreeMap::new();
        merged.insert("bootstrap.servers", &kafka.bootstrap_servers);
        for (k, v) in kafka.properties.iter().chain(own.iter()) {
            merged.insert(k, v);
        }
        // librdkafka parses each property as it would at start-up (unknown names, bad values);
        // one at a time so that every bad one is reported, and no client is created, so
        // nothing connects.
        for (k, v) in &merged {
            let mut c = ClientConfig::new();
            c.set(*k, *v);
            if let Err(e) = c.create_native_config() {
                errors.push(format!("kafka ({client}) {k} = {v:?}: {e}"));
            }
        }
        for (k, v) in &merged {
            if k.ends_with(".location")
                && *v != "probe"
                && let Err(e) = std::fs::File::open(v)
            {
                errors.push(format!("kafka {k} = {v:?}: {e}"));
            }
        }
    }
    let protocol = kafka
        .properties
        .get("security.protocol")
        .map(|p| p.to_ascii_uppercase())
        .unwrap_or_default();
    let mechanism = kafka
        .properties
        .get("sasl.mechanism")
        .map(String::as_str)
        .unwrap_or("GSSAPI");
    // The registry's CA file is read (and parsed) as the clients read it at start-up.
    if let Err(e) = notify_runtime::codec::http_client(&config.registry) {
        errors.push(e.to_string());
    }
    if protocol.starts_with("SASL_") && mechanism != "GSSAPI" && mechanism != "OAUTHBEARER" {
        for key in ["sasl.username", "sasl.password"] {
            if kafka.properties.get(key).is_none_or(|v| v.is_empty()) {
                errors.push(format!(
                    "kafka.properties.{key} is required with {protocol} and {mechanism}"
                ));
            }
        }
    }
    errors
}

/// The chain runs the stages before delivery with their own tables: each must be valid too.
pub fn stages(name: &str, config: &Config) -> Vec<String> {
    if name != notify_chain::NAME {
        return Vec::new();
    }
    fn table<S: serde::de::DeserializeOwned + Default>(
        config: &Config,
        name: &str,
        check: fn(&S) -> Result<(), Vec<String>>,
    ) -> Vec<String> {
        match config.processor::<S>(name) {
            Err(e) => vec![e.to_string()],
            Ok(s) => check(&s)
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(|e| format!("processors.{name}: {e}"))
                .collect(),
        }
    }
    let mut errors = table(
        config,
        notify_preferences::NAME,
        notify_preferences::Settings::check,
    );
    errors.extend(table(
        config,
        notify_dedup::NAME,
        notify_dedup::Settings::check,
    ));
    errors.extend(table(
        config,
        notify_templates::NAME,
        notify_templates::Settings::check,
    ));
    errors.extend(table(
        config,
        notify_ratelimit::NAME,
        notify_ratelimit::Settings::check,
    ));
    errors.extend(table(
        config,
        notify_fanout::NAME,
        notify_fanout::Settings::check,
    ));
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let env = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_with_env(None, env).expect("a loadable configuration")
    }

    #[test]
    fn defaults_pass() {
        assert_eq!(shared(&config(&[])), Vec::<String>::new());
    }

    #[test]
    fn librdkafka_refuses_unknown_properties_and_bad_values() {
        let errors = shared(&config(&[
            ("NOTIFY_KAFKA__PROPERTIES__security.protcol", "SSL"),
            ("NOTIFY_KAFKA__PRODUCER__linger.ms", "soon"),
        ]));
        let text = errors.join("\n");
        assert!(text.contains("security.protcol"), "{text}");
        assert!(text.contains("linger.ms"), "{text}");
    }

    #[test]
    fn missing_tls_files_and_sasl_credentials_are_named() {
        let errors = shared(&config(&[
            ("NOTIFY_KAFKA__PROPERTIES__security.protocol", "SASL_SSL"),
            ("NOTIFY_KAFKA__PROPERTIES__sasl.mechanism", "SCRAM-SHA-512"),
            ("NOTIFY_KAFKA__PROPERTIES__sasl.username", "notify"),
            (
                "NOTIFY_KAFKA__PROPERTIES__ssl.ca.location",
                "/nonexistent/ca.crt",
            ),
        ]));
        let text = errors.join("\n");
        assert!(text.contains("ssl.ca.location"), "{text}");
        assert!(text.contains("sasl.password is required"), "{text}");
        assert!(!text.contains("sasl.username is"), "{text}");
    }
}
