//! `gitvisor sync`: ask the running controller to reconcile now and report the outcome.

use std::process::ExitCode;

use anyhow::{Result, bail};
use serde_json::Value;

use super::{EXIT_FAILURE, OutputFormat, output};
use crate::daemon::api::ApiClient;

pub async fn sync(
    run_dir: &std::path::Path,
    no_wait: bool,
    format: OutputFormat,
) -> Result<ExitCode> {
    let Some(client) = ApiClient::find(run_dir).await? else {
        bail!(super::controller::not_running(run_dir));
    };
    let target = if no_wait {
        "/v1/sync?wait=0"
    } else {
        "/v1/sync"
    };
    let body = client.request("POST", target).await?;
    let outcome: Value = serde_json::from_str(&body)?;
    let converged = no_wait || outcome["converged"].as_bool() == Some(true);
    match format {
        OutputFormat::Json => output::stdout(&format!("{}\n", body.trim_end()))?,
        OutputFormat::Text => output::stdout(&render(&outcome, no_wait))?,
    }
    Ok(if converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

fn render(outcome: &Value, no_wait: bool) -> String {
    if no_wait {
        return "Sync queued.\n".to_owned();
    }
    let mut text = format!(
        "Sync {}: {}\n",
        if outcome["converged"].as_bool() == Some(true) {
            "converged"
        } else {
            "not converged"
        },
        outcome["summary"].as_str().unwrap_or_default()
    );
    if let Some(rejected) = outcome["rejected"].as_str() {
        text.push_str(&format!("Rejected revision: {rejected}\n"));
    }
    if let Some(error) = outcome["sourceError"].as_str() {
        text.push_str(&format!("Source error: {error}\n"));
    }
    text
}
