//! `restreamer-operator`: the Kubernetes controller for `Restream`
//! resources. This is the skeleton the operator grows in; it already shares
//! the data plane's config types, so the config it will render can never
//! drift from the one the data plane reads.

use clap::Parser;

/// Kubernetes operator for restreamer (work in progress: no subcommands yet).
#[derive(Parser)]
#[command(version)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    // The default data-plane config is what an empty Restream will render to.
    let config = restreamer::config::Config::default();
    eprintln!(
        "restreamer-operator: the controller is not implemented yet (data-plane default listen: {})",
        config.listen
    );
    std::process::exit(2);
}
