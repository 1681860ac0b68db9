//! `tmcs-tools`: the demo and the benchmark, and the FSP and bank
//! simulators. The demo and the benchmark run the real service
//! in-process in a temporary data dir and drive it through its HTTPS API
//! with simulated parties and handsets (`tmcs-client`).
//!
//! `tmcs demo` and `tmcs bench` run this binary (it sits next to `tmcs`);
//! their command line is the one of `tmcs` ([`tmcs::cli::ToolCommand`]).
//! `tmcs-tools sim fsp|bank` are the HTTPS servers that tmcs relays to
//! (see [`sim`]).
//! Exit status: 0 ok, 1 failure, 2 usage or configuration error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tmcs::app::AppError;
use tmcs::cli::{self, Failure, ToolCommand};

use tmcs_tools::{bench, demo, ocsp_bench, sim, submit_bench};

#[derive(Debug, Parser)]
#[command(
    name = "tmcs-tools",
    version,
    about = "tmcs demo and benchmark (also run as `tmcs demo` and `tmcs bench`), and the FSP and bank simulators"
)]
struct Cli {
    /// Configuration file (default: ./tmcs.toml when present, else the embedded defaults).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    #[command(flatten)]
    Tool(ToolCommand),
    /// The HTTPS servers that tmcs relays to: `sim fsp`, `sim bank`.
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// Internal to `bench --population`: seeds the population of a running
    /// benchmark's data dir in this (separate) process.
    #[command(hide = true)]
    SeedPopulation {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        population: usize,
        /// Hex of the 32-byte seed the payers' device keys derive from.
        #[arg(long)]
        key_seed: String,
    },
}

fn main() -> ExitCode {
    cli::init_openssl();
    match cli::parse::<Cli>("tmcs-tools") {
        Ok(c) => cli::exit(run(c)),
        Err(code) => code,
    }
}

fn run(c: Cli) -> Result<(), Failure> {
    let command = match c.command {
        Cmd::Tool(t) => t,
        Cmd::SeedPopulation {
            data_dir,
            population,
            key_seed,
        } => {
            let cfg = local_config(c.config.as_deref(), &data_dir, &[])?;
            cli::init_logging(&cfg, "error");
            let seconds = tmcs_tools::population::seed_in_this_process(
                cfg,
                demo::system_clock(),
                population,
                &key_seed,
            )
            .map_err(|e| Failure::failed(&e))?;
            println!("{seconds}");
            return Ok(());
        }
        Cmd::Sim(s) => {
            return sim::run(s).map_err(|e| match e {
                sim::SimError::Setup(m) => Failure::usage(m),
                sim::SimError::Failed(_) => Failure::failed(&e),
            })
        }
    };
    match command {
        ToolCommand::Demo(a) => run_demo(c.config.as_deref(), a.keep),
        ToolCommand::Bench(a) if a.scenario == "ocsp" => {
            run_ocsp_bench(c.config.as_deref(), a.seconds)
        }
        ToolCommand::Bench(a) if a.population > 0 => run_population_bench(
            c.config.as_deref(),
            bench::BenchOpts {
                seconds: a.seconds,
                handsets: a.handsets,
                floor_seconds: a.floor_seconds,
            },
            a.population,
        ),
        ToolCommand::Bench(a) if a.scenario == "submit" => {
            run_submit_bench(c.config.as_deref(), a.seconds, a.floor_seconds)
        }
        ToolCommand::Bench(a) if a.scenario == "relay" => run_relay_bench(
            c.config.as_deref(),
            bench::BenchOpts {
                seconds: a.seconds,
                handsets: a.handsets,
                floor_seconds: a.floor_seconds,
            },
        ),
        ToolCommand::Bench(a) => run_bench(
            c.config.as_deref(),
            bench::BenchOpts {
                seconds: a.seconds,
                handsets: a.handsets,
                floor_seconds: a.floor_seconds,
            },
        ),
    }
}

/// The configuration for a fresh temporary data dir: the usual layers
/// (`--config` or ./tmcs.toml, then `TMCS_*`), the service and its plain-HTTP
/// PKI listener on any free port of loopback (the tools talk to themselves),
/// and the SoftHSM2 environment
/// prepared before any thread exists.
fn local_config(
    config: Option<&Path>,
    dir: &Path,
    more: &[(&str, &str)],
) -> Result<tmcs::config::Config, Failure> {
    let mut extra = vec![
        ("TMCS_SERVER__LISTEN".to_string(), "127.0.0.1:0".to_string()),
        (
            "TMCS_PKI__HTTP_LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        ),
    ];
    extra.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let cfg = cli::load_config_with(config, dir, extra)?;
    tmcs::hsm::prepare_process_env(cfg.softhsm_conf.as_deref());
    Ok(cfg)
}

fn temp_dir() -> Result<tempfile::TempDir, Failure> {
    demo::temp_data_dir()
        .map_err(|e| Failure::failed(&AppError::Setup(format!("temporary data dir: {e}"))))
}

/// Runs one benchmark in a fresh temporary data dir (with `extra`
/// settings) and prints its JSON line.
fn report(
    config: Option<&Path>,
    extra: &[(&str, &str)],
    run: impl FnOnce(tmcs::config::Config, &Path) -> Result<serde_json::Value, demo::DemoError>,
) -> Result<(), Failure> {
    let dir = temp_dir()?;
    let cfg = local_config(config, dir.path(), extra)?;
    cli::init_logging(&cfg, "error");
    let line = run(cfg, dir.path()).map_err(|e| Failure::failed(&e))?;
    println!("{line}");
    Ok(())
}

fn run_population_bench(
    config: Option<&Path>,
    opts: bench::BenchOpts,
    population: usize,
) -> Result<(), Failure> {
    report(config, &[], |cfg, _| {
        tmcs_tools::population::run(cfg, demo::system_clock(), opts, population)
    })
}

fn run_bench(config: Option<&Path>, opts: bench::BenchOpts) -> Result<(), Failure> {
    report(config, &[], |cfg, _| {
        bench::run(cfg, demo::system_clock(), opts)
    })
}

fn run_relay_bench(config: Option<&Path>, opts: bench::BenchOpts) -> Result<(), Failure> {
    let relay = [
        ("TMCS_RELAY__MODE", "fsp+bank"),
        ("TMCS_RELAY__BANK", tmcs_tools::trip::BANK),
    ];
    report(config, &relay, |cfg, _| {
        bench::run_relay(cfg, demo::system_clock(), opts)
    })
}

/// Submissions alone: the payers are activated with cheap argon2
/// parameters (a submission never hashes a PIN), so the setup stays short.
fn run_submit_bench(
    config: Option<&Path>,
    seconds: u64,
    floor_seconds: u64,
) -> Result<(), Failure> {
    let cheap_pins = [
        ("TMCS_PIN__ARGON2_MEMORY_KIB", "1024"),
        ("TMCS_PIN__ARGON2_ITERATIONS", "1"),
    ];
    report(config, &cheap_pins, |cfg, _| {
        submit_bench::run(cfg, demo::system_clock(), seconds, floor_seconds)
    })
}

fn run_ocsp_bench(config: Option<&Path>, seconds: u64) -> Result<(), Failure> {
    report(config, &[], |cfg, dir| {
        ocsp_bench::run(cfg, demo::system_clock(), dir, seconds)
    })
}

fn run_demo(config: Option<&Path>, keep: bool) -> Result<(), Failure> {
    let dir = temp_dir()?;
    // The whole trip: tmcs instructs the simulated bank itself.
    let cfg = local_config(
        config,
        dir.path(),
        &[
            ("TMCS_RELAY__MODE", "fsp+bank"),
            ("TMCS_RELAY__BANK", tmcs_tools::trip::BANK),
        ],
    )?;
    cli::init_logging(&cfg, "warn");
    let result = demo::run(cfg, demo::system_clock());
    if keep {
        let path = dir.keep();
        println!("data dir kept: {}", path.display());
    }
    result.map_err(|e| Failure::failed(&e))
}
