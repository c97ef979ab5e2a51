//! `spillway`: the one binary. Thin on purpose: it parses arguments, builds
//! configurations and calls into the crates (`spillway-node`,
//! `spillway-sidecar`); the client commands speak the HTTP API.

mod bench;
mod burst_load;
mod chaos;
mod client;
mod commands;
mod config;
mod demo;
mod executors;
mod local_cluster;
mod manuals;
mod publisher;
mod serve;
mod stats;
mod telemetry;
mod up;

use clap::{CommandFactory as _, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "spillway",
    version,
    about = "A distributed runtime for sandboxed GPU work"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a host: a sidecar that spawns and supervises its node.
    Host(serve::HostArgs),
    /// Found a new cluster and run its first host.
    Init(serve::HostArgs),
    /// Join a cluster with a ticket and run as its host.
    Join(serve::JoinArgs),
    /// Join tickets.
    #[command(subcommand)]
    Ticket(commands::TicketCommand),
    /// Scoped API tokens: create, list, revoke.
    #[command(subcommand)]
    Token(commands::TokenCommand),
    /// Tenants (namespaces of artifacts, functions and tokens).
    #[command(subcommand)]
    Tenant(commands::TenantCommand),
    /// Follow an async job (`invoke --async`): get, wait, cancel.
    #[command(subcommand)]
    Job(commands::JobCommand),
    /// Control-plane changes made through the API: who, when, what.
    Audit(commands::AuditArgs),
    /// Back up the control state (tenants, tokens, functions, artifact
    /// records) from any member, or offline from a stopped host.
    Backup(commands::BackupArgs),
    /// Found a new cluster from a backup and run its first host.
    Restore(commands::RestoreArgs),
    /// Make an ed25519 publisher key for signing artifacts.
    Keygen(publisher::KeygenArgs),
    /// Drain or remove cluster members.
    #[command(subcommand)]
    Member(commands::MemberCommand),
    /// Shell completions on standard output (bash, zsh, fish, elvish,
    /// powershell), e.g. `spillway completions bash >
    /// /usr/share/bash-completion/completions/spillway`.
    Completions { shell: clap_complete::Shell },
    /// Man pages for every command into a folder, e.g. `spillway man --out
    /// /usr/local/share/man/man1`.
    Man {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Host configuration files: a commented example, or check one.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Run only the node (the executor), listening on a Unix socket.
    Node(serve::NodeArgs),
    /// Run only the sidecar, connecting to a node started separately.
    Sidecar(serve::SidecarArgs),
    /// Start a local cluster on loopback and print how to reach it.
    Up(up::UpArgs),
    /// Upload and list artifacts.
    #[command(subcommand)]
    Artifact(commands::ArtifactCommand),
    /// Register and list functions.
    #[command(subcommand, name = "fn")]
    Function(commands::FunctionCommand),
    /// Invoke a function: input from a file or stdin, output to stdout.
    Invoke(commands::InvokeArgs),
    /// Show the cluster.
    Status(commands::StatusArgs),
    /// Measure: HTTP invoke latency and throughput.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Chaos scenarios: real hosts under faults, the delivery contract checked.
    #[command(subcommand)]
    Chaos(chaos::ChaosCommand),
    /// (Internal) compile a kernel pack's CUDA source from stdin to PTX on
    /// stdout under limits: the node runs this as a child process.
    #[command(hide = true)]
    CompileKernel(CompileKernelArgs),
    /// (Internal) print how many GPUs the driver shows: `spillway host
    /// --executors per-gpu` asks a child, so the host never loads the driver.
    #[command(hide = true)]
    GpuCount,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a commented file of every key at its default.
    Example {
        /// The keys as a Markdown table instead (docs/configuration.md).
        #[arg(long)]
        markdown: bool,
        /// Whose keys: `spillway host`'s, or those of its halves run apart.
        #[arg(long, value_enum, default_value_t = Configured::Host)]
        command: Configured,
    },
    /// Check a file as `spillway host --config FILE` would, without
    /// starting anything; print the flags it stands for.
    Check {
        /// The file.
        file: PathBuf,
        /// Whose file it is.
        #[arg(long, value_enum, default_value_t = Configured::Host)]
        command: Configured,
    },
}

/// The commands that take `--config`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Configured {
    Host,
    Sidecar,
    Node,
}

impl Configured {
    fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Sidecar => "sidecar",
            Self::Node => "node",
        }
    }
}

/// `spillway config`: runs without a runtime.
fn config_command(command: ConfigCommand) -> anyhow::Result<std::process::ExitCode> {
    let root = Cli::command();
    let of = |c: Configured| {
        root.find_subcommand(c.name())
            .expect("a configured command")
    };
    match command {
        ConfigCommand::Example {
            markdown: false,
            command,
        } => print!("{}", config::example(of(command))),
        ConfigCommand::Example {
            markdown: true,
            command,
        } => print!("{}", config::markdown(of(command))),
        ConfigCommand::Check { file, command } => {
            let flags = config::load(&file, of(command), |_| false)?;
            // The keys together, as the command would parse them.
            let mut argv = vec!["spillway".into(), command.name().into()];
            argv.extend(flags.iter().cloned());
            Cli::try_parse_from(&argv)?;
            for flag in flags {
                println!("{}", flag.to_string_lossy());
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
struct CompileKernelArgs {
    /// The virtual architecture, e.g. compute_90.
    #[arg(long)]
    arch: String,
    /// CPU seconds the compile may use.
    #[arg(long)]
    cpu_seconds: u64,
    /// Address space in bytes the compile may use.
    #[arg(long)]
    address_space: u64,
}

/// Where a command reads the cluster's address and token.
#[derive(Debug, Clone, clap::Args)]
struct Target {
    /// The host to talk to.
    #[arg(
        long,
        env = "SPILLWAY_ENDPOINT",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    endpoint: String,
    /// The bearer token.
    #[arg(long, env = "SPILLWAY_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: client::ClientTls,
}

fn main() -> std::process::ExitCode {
    // A host's `--config FILE` becomes flags before the real parse.
    let argv = match config::expand(&Cli::command(), std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse_from(argv);
    match &cli.command {
        Command::Completions { shell } => {
            return match manuals::completions(Cli::command(), *shell, &mut std::io::stdout()) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: writing the completions: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        Command::Man { out } => {
            return match manuals::man_pages(Cli::command(), out) {
                Ok(n) => {
                    println!("{n} man pages in {}", out.display());
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: writing man pages to {}: {e}", out.display());
                    std::process::ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    if let Command::Config(command) = cli.command {
        return config_command(command).unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        });
    }
    // Before any thread or runtime: the child sets its own limits.
    if let Command::CompileKernel(args) = &cli.command {
        let code =
            spillway_kernels::nvrtc::child_main(&args.arch, args.cpu_seconds, args.address_space);
        return std::process::ExitCode::from(code as u8);
    }
    if let Command::GpuCount = &cli.command {
        println!("{}", spillway_node::gpu_count());
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // A benchmark prints a table; its in-process voters' logs would bury it.
    let log = match cli.command {
        Command::Bench(_) => "warn",
        // The hosts log to their own files; say only what the harness does.
        Command::Chaos(_) => "warn,spillway_chaos=info",
        _ => "info",
    };
    let exporting = {
        let _in_runtime = runtime.enter();
        telemetry::init(log, exports(&cli.command))
    };
    let exporting = match exporting {
        Ok(exporting) => exporting,
        Err(e) => {
            eprintln!("error: traces: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Host(args) => serve::host(args).await,
            Command::Init(mut args) => {
                args.membership.init = true;
                serve::host(args).await
            }
            Command::Join(args) => serve::join(args).await,
            Command::Ticket(cmd) => commands::ticket(cmd).await,
            Command::Token(cmd) => commands::token(cmd).await,
            Command::Tenant(cmd) => commands::tenant(cmd).await,
            Command::Audit(args) => commands::audit(args).await,
            Command::Backup(args) => commands::backup(args).await,
            Command::Restore(args) => commands::restore(args).await,
            Command::Job(cmd) => commands::job(cmd).await,
            Command::Keygen(args) => publisher::keygen(args),
            Command::Member(cmd) => commands::member(cmd).await,
            Command::Node(args) => serve::node(args).await,
            Command::Sidecar(args) => serve::sidecar(args).await,
            Command::Up(args) => up::up(args).await,
            Command::Artifact(cmd) => commands::artifact(cmd).await,
            Command::Function(cmd) => commands::function(cmd).await,
            Command::Invoke(args) => commands::invoke(args).await,
            Command::Status(args) => commands::status(args).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Chaos(cmd) => chaos::run(cmd).await,
            Command::CompileKernel(_)
            | Command::GpuCount
            | Command::Config(_)
            | Command::Completions { .. }
            | Command::Man { .. } => {
                unreachable!("handled before the runtime")
            }
        }
    });
    // What is queued goes out while the runtime (the gRPC channel's
    // home) still runs.
    drop(exporting);
    drop(runtime);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Which processes export spans, and as whom: the long-running ones.
fn exports(command: &Command) -> Option<telemetry::Exports> {
    use spillway_telemetry::Role;
    let (args, instance, role) = match command {
        Command::Host(a) | Command::Init(a) => (&a.trace, a.trace_instance(), Role::Sidecar),
        Command::Join(a) => (&a.host.trace, a.host.trace_instance(), Role::Sidecar),
        Command::Sidecar(a) => (&a.trace, a.trace_instance(), Role::Sidecar),
        Command::Node(a) => (&a.trace, a.trace.instance(0), Role::Node),
        _ => return None,
    };
    Some(telemetry::Exports {
        args: args.clone(),
        instance,
        role,
    })
}

/// The default state directory of a host.
fn default_dir() -> PathBuf {
    PathBuf::from("spillway-data")
}
