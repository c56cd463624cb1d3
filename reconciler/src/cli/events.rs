//! `gitvisor events [-f]`: the running controller's recent events, and with `-f` every new
//! one as it happens, until interrupted or the controller stops; a follow that the
//! controller ends says so and exits 1, so neither a person nor a script mistakes a
//! stopped controller for a quiet one.

use std::process::ExitCode;

use anyhow::{Result, bail};
use serde_json::Value;

use super::{OutputFormat, output};
use crate::daemon::api::{ApiClient, StreamEnd, socket_path};

pub async fn events(
    run_dir: &std::path::Path,
    follow: bool,
    limit: u16,
    format: OutputFormat,
) -> Result<ExitCode> {
    let Some(client) = ApiClient::find(run_dir).await? else {
        bail!(super::controller::not_running(run_dir));
    };
    let target = format!(
        "/v1/events?limit={limit}{}",
        if follow { "&follow=1" } else { "" }
    );
    let mut failed = None;
    let end = client
        .stream(&target, |line| {
            if line.is_empty() {
                return true;
            }
            let text = match format {
                OutputFormat::Json => format!("{line}\n"),
                OutputFormat::Text => render(line),
            };
            match output::stdout(&text) {
                Ok(()) => true,
                Err(error) => {
                    failed = Some(error);
                    false
                }
            }
        })
        .await?;
    if let Some(error) = failed {
        // A reader that went away (`| head`) is not an error.
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(error.into());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if follow && end == StreamEnd::Closed {
        bail!(stopped(run_dir));
    }
    Ok(ExitCode::SUCCESS)
}

/// What `events -f` says when the controller ends the stream under it.
fn stopped(run_dir: &std::path::Path) -> String {
    format!(
        "the controller stopped: its event stream on {} ended; see `systemctl status gitvisor` or its log, and run `gitvisor events -f` again once it is back",
        socket_path(run_dir).display()
    )
}

/// `2026-01-01T10:00:00Z Info    Bridge/br0: create applied  (revision abc)`.
fn render(line: &str) -> String {
    let Ok(event) = serde_json::from_str::<Value>(line) else {
        return format!("{line}\n");
    };
    if let Some(missed) = event["missed"].as_u64() {
        return format!("… {missed} events missed (the reader fell behind)\n");
    }
    let when = event["unix"]
        .as_u64()
        .map(|unix| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix),
            )
            .to_string()
        })
        .unwrap_or_default();
    let resource = event["resource"]
        .as_str()
        .map(|r| format!("{r}: "))
        .unwrap_or_default();
    format!(
        "{when} {:<7} {resource}{}\n",
        event["level"].as_str().unwrap_or("-"),
        event["message"].as_str().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_line() {
        assert_eq!(
            render(
                r#"{"seq":3,"unix":0,"level":"Error","resource":"Bridge/br0","revision":"r","message":"create failed: x"}"#
            ),
            "1970-01-01T00:00:00Z Error   Bridge/br0: create failed: x\n"
        );
        assert_eq!(
            render(r#"{"missed":4}"#),
            "… 4 events missed (the reader fell behind)\n"
        );
    }
}
