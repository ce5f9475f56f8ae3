//! `notify acls apply`: writes the ACLs of `topics/acls.toml` to the cluster, like
//! `notify topics apply` does for topics. Each principal gets exactly what its entry names
//! (see the file's header for the format); nothing else is allowed, since the cluster's
//! authorizer denies what no ACL allows. Creating an ACL that exists already changes nothing,
//! so the command can run any number of times; it never deletes an ACL.
//!
//! rust-rdkafka has no ACL API, so the bindings go through librdkafka's C admin API
//! ([`native`]).

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use notify_runtime::Config;

mod native;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclsFile {
    #[serde(rename = "principal")]
    pub principals: Vec<Principal>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    pub name: String,
    /// The processor using this identity (documentation for the chart; not an ACL).
    pub processor: Option<String>,
    /// The chart's pipeline modes that deploy it (documentation; not an ACL).
    #[serde(default)]
    pub modes: Vec<String>,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default)]
    pub admin_prefixes: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub transactional_id_prefix: Option<String>,
}

impl AclsFile {
    pub fn load(path: &Path) -> anyhow::Result<AclsFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource {
    Topic,
    Group,
    TransactionalId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pattern {
    Literal,
    Prefixed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Read,
    Write,
    Create,
    Alter,
    Describe,
    DescribeConfigs,
    AlterConfigs,
}

/// One ALLOW rule: `principal` may do `operation` on the resource, from any host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Binding {
    pub principal: String,
    pub resource: Resource,
    pub pattern: Pattern,
    pub name: String,
    pub operation: Operation,
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "allow {} {:?} on {:?} {} ({:?})",
            self.principal, self.operation, self.resource, self.name, self.pattern
        )
    }
}

/// Every binding the file asks for, with `{prefix}` replaced by `group_prefix`.
pub fn bindings(file: &AclsFile, group_prefix: &str) -> Vec<Binding> {
    let mut out = Vec::new();
    for p in &file.principals {
        let principal = format!("User:{}", p.name);
        let mut add = |resource, pattern, name: &str, ops: &[Operation]| {
            for &operation in ops {
                out.push(Binding {
                    principal: principal.clone(),
                    resource,
                    pattern,
                    name: name.replace("{prefix}", group_prefix),
                    operation,
                });
            }
        };
        use Operation::*;
        for t in &p.read {
            add(Resource::Topic, Pattern::Literal, t, &[Read, Describe]);
        }
        for t in &p.write {
            add(Resource::Topic, Pattern::Literal, t, &[Write, Describe]);
        }
        for prefix in &p.admin_prefixes {
            let ops = [Create, Alter, Describe, DescribeConfigs, AlterConfigs];
            add(Resource::Topic, Pattern::Prefixed, prefix, &ops);
        }
        for g in &p.groups {
            add(Resource::Group, Pattern::Literal, g, &[Read]);
        }
        if let Some(prefix) = &p.transactional_id_prefix {
            let (r, pat) = (Resource::TransactionalId, Pattern::Prefixed);
            add(r, pat, prefix, &[Write, Describe]);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Writes `bindings` to the cluster (unless `dry_run`); returns them.
pub async fn apply(
    config: &Config,
    file: &AclsFile,
    dry_run: bool,
) -> anyhow::Result<Vec<Binding>> {
    let wanted = bindings(file, &config.kafka.group_prefix);
    if dry_run || wanted.is_empty() {
        return Ok(wanted);
    }
    let admin = crate::topics::admin(config)?;
    let to_create = wanted.clone();
    // librdkafka's admin call blocks on its own queue: off the async threads.
    tokio::task::spawn_blocking(move || native::create_acls(&admin, &to_create)).await??;
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_file_gives_least_privilege_bindings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topics/acls.toml");
        let file = AclsFile::load(&path).unwrap();
        let b = bindings(&file, "notify");
        let of = |who: &str| -> Vec<&Binding> {
            b.iter()
                .filter(|x| x.principal == format!("User:{who}"))
                .collect()
        };
        // An outside producer may write its contract topic and nothing else.
        let producer = of("svc-requests");
        assert_eq!(producer.len(), 2, "{producer:?}");
        assert!(producer.iter().all(|x| x.name == "notify.requests.v1"
            && x.resource == Resource::Topic
            && matches!(x.operation, Operation::Write | Operation::Describe)));
        // Delivery never writes the requests topic; the chain's group prefix is substituted.
        assert!(
            !of("notify-deliver-sms")
                .iter()
                .any(|x| x.name == "notify.requests.v1" && x.operation == Operation::Write)
        );
        assert!(
            of("notify-chain")
                .iter()
                .any(|x| x.resource == Resource::Group
                    && x.name == "notify-chain"
                    && x.operation == Operation::Read)
        );
        assert!(
            of("notify-chain")
                .iter()
                .any(|x| x.resource == Resource::TransactionalId
                    && x.pattern == Pattern::Prefixed
                    && x.name == "notify-chain-")
        );
        assert!(b.iter().all(|x| !x.name.contains("{prefix}")));
    }
}
