//! `realtime-load`: flags → scenario → summary table (and `--json`) → exit code.
//! 0 = every message delivered once; 1 = the run found a failure; 2 = it could not run.

use std::process::ExitCode;

use clap::Parser as _;
use load_tests::cli::Cli;
use load_tests::scenario;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    scenario::raise_fd_limit();
    if let Some(sources) = &cli.shared.source_ips {
        load_tests::target::set_source_addresses(sources.0.clone());
    }
    let json = cli.shared.json.clone();
    let plot = cli.shared.plot.clone();
    let report = match scenario::run(cli).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("realtime-load: {error:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.table());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
        if let Err(error) = std::fs::write(&path, text + "\n") {
            eprintln!("realtime-load: writing {}: {error}", path.display());
            return ExitCode::from(2);
        }
    }
    // `compare` and `soak` draw their own plots (bars per server; a timeline of the run);
    // `churn` measures no latencies.
    if let Some(path) = plot.filter(|_| !matches!(report.scenario, "compare" | "soak" | "churn")) {
        let written = match &report.latencies {
            Some(latencies) => load_tests::plot::write_svg(&path, report.scenario, latencies),
            None => Err(anyhow::anyhow!("this run measured no latencies")),
        };
        if let Err(error) = written {
            eprintln!("realtime-load: --plot {}: {error:#}", path.display());
        }
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
