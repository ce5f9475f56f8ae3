//! `notify`: one binary for every processor and operator tool.

use std::io::BufReader;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use notify_cli::{dlq, produce, run, sandbox, schemas, topics};
use notify_runtime::Config;

/// jemalloc instead of glibc's malloc: profiles of every processor put the allocator first
/// (`_int_malloc`, `_int_free`), since records are decoded into and encoded from owned values.
/// With jemalloc every hop and stage took 20-35% less CPU per record at the same peak RSS
/// (mimalloc saved as much but added about 20 MiB to dedup and ratelimit).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "notify", version, about = "Kafka-native notification pipeline", long_about = None)]
struct Cli {
    /// Configuration file (TOML). Environment variables NOTIFY_<SECTION>__<KEY> override it.
    #[arg(long, short, global = true, env = "NOTIFY_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines as text, or one JSON object a line (fields such as event_id, user_id, stage
    /// and outcome at the top level), for a log collector.
    #[arg(
        long,
        global = true,
        env = "NOTIFY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one processor until SIGTERM (drains in-flight records, commits, exits).
    Run {
        /// Which processor (see `notify run --help` for the list in the error of an unknown name).
        processor: String,
        /// Only load and validate the configuration, then exit.
        #[arg(long)]
        check_config: bool,
    },
    /// Topic administration.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Kafka ACL administration (clusters whose ACLs are not managed by an operator).
    Acls {
        #[command(subcommand)]
        command: AclsCommand,
    },
    /// Schema registry administration.
    Schemas {
        #[command(subcommand)]
        command: SchemasCommand,
    },
    /// CQL database administration.
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
    /// Dead letters: inspect them, redrive chosen ones to their source topic.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Template administration.
    Templates {
        #[command(subcommand)]
        command: TemplatesCommand,
    },
    /// Produce JSON lines (one record a line) as Avro to a topic.
    Produce {
        /// What the lines are.
        #[arg(value_enum)]
        kind: produce::Kind,
        /// File to read; `-` or absent reads standard input.
        file: Option<PathBuf>,
        /// Topic (default: the contract topic of the kind).
        #[arg(long)]
        topic: Option<String>,
    },
    /// Show outcomes from the status topic (every stage's decisions), decoded.
    Status {
        /// Only this event.
        #[arg(long)]
        event_id: Option<String>,
        /// Only this user.
        #[arg(long)]
        user_id: Option<String>,
        /// Only statuses written since this time (RFC 3339, epoch ms or an age like 2h): each
        /// partition is read from the broker's offset for that time.
        #[arg(long, value_parser = notify_cli::dlq::parse_time)]
        since: Option<i64>,
        /// Keep printing new outcomes until Ctrl-C.
        #[arg(long, short)]
        follow: bool,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "notify.status.v1")]
        topic: String,
    },
    /// Copy a range of a topic back into the pipeline. Copies carry notify.replay.run; the
    /// delivery ledger then sends only what was never delivered (--force: resend as new).
    Replay(Box<notify_cli::replay::ReplayArgs>),
    /// Load requests, users or templates from JSON-lines or Avro files into their topics.
    Backfill(notify_cli::backfill::BackfillArgs),
    /// One notification's whole trail: statuses, retries, dead letters, ledger rows.
    Trace(notify_cli::trace::TraceArgs),
    /// A consumer group's committed offsets: show them, or reset them while it is stopped.
    Offsets {
        #[command(subcommand)]
        command: notify_cli::offsets::OffsetsCommand,
    },
    /// Each processor group's lag per topic and partition, and whether it is shrinking.
    Lag(notify_cli::lag::LagArgs),
    /// Serve the provider sandbox (APNs, FCM, Twilio, SendGrid stand-ins) until Ctrl-C.
    Sandbox {
        #[arg(long, default_value = "127.0.0.1:18443")]
        listen: std::net::SocketAddr,
        /// Where credentials are loaded from (or generated into) and the key files written.
        #[arg(long, default_value = ".run/creds")]
        creds_dir: PathBuf,
        /// Accepted messages kept for `GET /sandbox/messages` (the oldest go first); the
        /// counters of `/sandbox/stats` cover every message. Default: all.
        #[arg(long)]
        keep_messages: Option<usize>,
    },
}

#[derive(Subcommand)]
enum TemplatesCommand {
    /// Produce every <dir>/<template_id>/<CHANNEL>.<locale>.toml as a Template record.
    Push {
        dir: PathBuf,
        /// Topic (default: the contract's templates topic).
        #[arg(long, default_value = "notify.templates.v1")]
        topic: String,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create missing topics and update what differs from the topics file.
    Apply {
        #[arg(long, default_value = "topics/topics.toml")]
        file: PathBuf,
        /// Show the plan without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Override the replication factor of every topic (1 on a one-broker dev stack).
        #[arg(long)]
        replication_factor: Option<i32>,
    },
}

#[derive(Subcommand)]
enum AclsCommand {
    /// Allow each principal of the ACL file what its entry names (existing ACLs are kept).
    Apply {
        #[arg(long, default_value = "topics/acls.toml")]
        file: PathBuf,
        /// Show the ACLs without writing them.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Register each topic's value schema under <topic>-value (topic-name strategy).
    Register {
        #[arg(long, default_value = "topics/topics.toml")]
        file: PathBuf,
        /// Compatibility rule set on each subject before registering.
        #[arg(long, default_value = "BACKWARD")]
        compatibility: String,
    },
}

#[derive(Subcommand)]
enum DbCommand {
    /// Create the keyspace and apply the migrations not yet applied (idempotent).
    Migrate,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("NOTIFY_LOG")
        .unwrap_or_else(|_| "info,scylla=warn,librdkafka=error,rdkafka=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<notify_cli::Exit>().is_some() => {
            let code = e.downcast_ref::<notify_cli::Exit>().map_or(1, |c| c.0);
            std::process::ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Run {
            processor,
            check_config,
        } => {
            run::check(&processor, &config)?;
            if check_config {
                println!("configuration for {processor} is valid");
                return Ok(());
            }
            let shutdown = notify_runtime::shutdown::on_signals();
            run::run(&processor, config, shutdown).await
        }
        Command::Topics {
            command:
                TopicsCommand::Apply {
                    file,
                    dry_run,
                    replication_factor,
                },
        } => {
            let spec = topics::TopicsFile::load(&file)?;
            let changes = topics::apply(&config, &spec, replication_factor, dry_run).await?;
            let verb = if dry_run { "would change" } else { "changed" };
            for change in &changes {
                println!("{change}");
            }
            println!(
                "{} topics checked, {} {verb}",
                spec.topics.len(),
                changes.len()
            );
            Ok(())
        }
        Command::Acls {
            command: AclsCommand::Apply { file, dry_run },
        } => {
            let spec = notify_cli::acls::AclsFile::load(&file)?;
            let bindings = notify_cli::acls::apply(&config, &spec, dry_run).await?;
            for b in &bindings {
                println!("{b}");
            }
            let verb = if dry_run {
                "would be written"
            } else {
                "written"
            };
            println!(
                "{} principals, {} ACLs {verb}",
                spec.principals.len(),
                bindings.len()
            );
            Ok(())
        }
        Command::Schemas {
            command:
                SchemasCommand::Register {
                    file,
                    compatibility,
                },
        } => {
            let spec = topics::TopicsFile::load(&file)?;
            for r in schemas::register(&config, &spec, &compatibility).await? {
                println!("{} -> {} (id {})", r.subject, r.record, r.id);
            }
            Ok(())
        }
        Command::Db {
            command: DbCommand::Migrate,
        } => {
            let session = notify_runtime::cql::connect(&config.cql).await?;
            let report = notify_runtime::cql::migrate(&session, &config.cql).await?;
            if report.keyspace_created {
                println!("created keyspace {}", config.cql.keyspace);
            }
            for name in &report.applied {
                println!("applied {name}");
            }
            println!(
                "{} applied, {} already applied",
                report.applied.len(),
                report.already_applied.len()
            );
            Ok(())
        }
        Command::Status {
            event_id,
            user_id,
            since,
            follow,
            json,
            topic,
        } => {
            let filter = notify_cli::status::StatusFilter {
                event_id,
                user_id,
                since_ms: since,
            };
            let report = notify_cli::status::show(&config, &topic, &filter, follow, json).await?;
            eprintln!("{report}");
            Ok(())
        }
        Command::Sandbox {
            listen,
            creds_dir,
            keep_messages,
        } => {
            let shutdown = notify_runtime::shutdown::on_signals();
            sandbox::serve(listen, &creds_dir, keep_messages, shutdown).await
        }
        Command::Dlq { command } => dlq::execute(&config, command).await,
        Command::Replay(args) => notify_cli::replay::execute(&config, *args).await,
        Command::Backfill(args) => notify_cli::backfill::run(&config, &args).await,
        Command::Trace(args) => notify_cli::trace::execute(&config, &args).await,
        Command::Offsets { command } => notify_cli::offsets::execute(&config, command).await,
        Command::Lag(args) => notify_cli::lag::execute(&config, &args).await,
        Command::Templates {
            command: TemplatesCommand::Push { dir, topic },
        } => {
            let templates = notify_cli::templates::load_dir(&dir)?;
            let n = notify_cli::templates::push(&config, &topic, &templates).await?;
            println!("pushed {n} templates to {topic}");
            Ok(())
        }
        Command::Produce { kind, file, topic } => {
            let topic = topic.unwrap_or_else(|| kind.default_topic().to_string());
            let input: Box<dyn std::io::BufRead> = match file.as_deref() {
                None => Box::new(BufReader::new(std::io::stdin())),
                Some(p) if p.as_os_str() == "-" => Box::new(BufReader::new(std::io::stdin())),
                Some(p) => Box::new(BufReader::new(
                    std::fs::File::open(p)
                        .with_context(|| format!("cannot open {}", p.display()))?,
                )),
            };
            let mut progress = notify_cli::progress::Progress::new("produced", None);
            let report =
                produce::produce(&config, kind, &topic, input, |n| progress.set(n as u64)).await?;
            progress.finish();
            for bad in &report.bad {
                eprintln!("line {}: {}", bad.line, bad.reason);
            }
            println!(
                "produced {} records to {topic}; {} bad lines",
                report.produced,
                report.bad.len()
            );
            if report.bad.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{} bad lines", report.bad.len())
            }
        }
    }
}
