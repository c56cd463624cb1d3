//! [`LvmTools`]: the real [`LvmSeam`], running the lvm2 tools, `mkfs.*`, `fsadm` and
//! `qemu-img`.
//!
//! Every tool runs through `tokio::process` with its arguments as a vector (never a
//! shell), `LC_ALL=C` so messages are stable, stdin closed, and `kill_on_drop`, so a
//! cancelled or timed-out step never leaves one running. lvm2 commands have a deadline of
//! their own ([`LVM_DEADLINE`]); the long ones (a `mkfs`, a filesystem resize, an image
//! copy) are bounded by the step's deadline instead, which drops them.
//!
//! Long-running children are started under `setpriv --pdeathsig KILL` where util-linux
//! has it: if gitvisor itself is killed (SIGKILL, OOM), the copy stops with it instead of
//! writing on into a volume the next run is about to replace.
//!
//! "Already done" is tolerated only where the host really matches: removing an LV that
//! the report no longer lists, extending one the report shows at least that big.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncReadExt;
use tokio::process::Command;

use super::report::{LV_FIELDS, VG_FIELDS, parse_lvs, parse_vgs};
use super::seam::{ImageInfo, LvmError, LvmReport, LvmRequest, LvmSeam, ProgressSink};
use crate::drivers::volume::Filesystem;

/// How long one lvm2 command may take.
pub const LVM_DEADLINE: Duration = Duration::from_secs(120);

/// The lvm2 tools and friends on this host.
#[derive(Debug, Clone)]
pub struct LvmTools {
    /// `setpriv`, when util-linux has it: long children die with gitvisor.
    setpriv: Option<PathBuf>,
}

impl Default for LvmTools {
    fn default() -> Self {
        LvmTools::new()
    }
}

impl LvmTools {
    pub fn new() -> Self {
        LvmTools {
            setpriv: find_in_path("setpriv"),
        }
    }

    fn command(program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("LC_ALL", "C")
            // lvm2 warns about every inherited descriptor; they are the runtime's own.
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// A command for a long child, under `setpriv --pdeathsig KILL` when possible.
    fn long_command(&self, program: &str, args: &[&str]) -> Command {
        match &self.setpriv {
            Some(setpriv) => {
                let mut command = Self::command(&setpriv.to_string_lossy());
                command
                    .args(["--pdeathsig", "KILL", "--", program])
                    .args(args);
                command
            }
            None => {
                let mut command = Self::command(program);
                command.args(args);
                command
            }
        }
    }

    /// Runs an lvm2 tool to completion within [`LVM_DEADLINE`]; its stdout on success.
    async fn lvm(&self, program: &str, args: &[String]) -> Result<String, LvmError> {
        let mut command = Self::command(program);
        command.args(args);
        let output = tokio::time::timeout(LVM_DEADLINE, command.output())
            .await
            .map_err(|_| LvmError::TimedOut {
                program: program.to_owned(),
                seconds: LVM_DEADLINE.as_secs(),
            })?
            .map_err(|error| spawn_error(program, &error))?;
        finished(program, output.status, &output.stdout, &output.stderr)
    }

    /// Runs a long child to completion (no deadline of its own: the step's applies).
    pub(crate) async fn long(&self, program: &str, args: &[&str]) -> Result<String, LvmError> {
        let output = self
            .long_command(program, args)
            .output()
            .await
            .map_err(|error| spawn_error(program, &error))?;
        finished(program, output.status, &output.stdout, &output.stderr)
    }

    async fn write_image(
        &self,
        image: &Path,
        format: &str,
        device: &Path,
        progress: ProgressSink<'_>,
    ) -> Result<(), LvmError> {
        let image = image.to_string_lossy();
        let device = device.to_string_lossy();
        let args = [
            "convert", "-p", "-n", "-f", format, "-O", "raw", &image, &device,
        ];
        self.qemu_img_progress(&args, progress).await
    }

    /// Runs `qemu-img ARGS` (with `-p`) as a long child, telling `progress` the percent
    /// it prints.
    pub(crate) async fn qemu_img_progress(
        &self,
        args: &[&str],
        progress: ProgressSink<'_>,
    ) -> Result<(), LvmError> {
        let program = "qemu-img";
        let mut child = self
            .long_command(program, args)
            .spawn()
            .map_err(|error| spawn_error(program, &error))?;
        let mut stdout = child.stdout.take().ok_or_else(|| LvmError::Spawn {
            program: program.to_owned(),
            message: "no stdout to read progress from".into(),
        })?;
        let mut stderr = child.stderr.take().ok_or_else(|| LvmError::Spawn {
            program: program.to_owned(),
            message: "no stderr to read errors from".into(),
        })?;
        let errors = tokio::spawn(async move {
            let mut text = Vec::new();
            // A read error leaves what was read: the exit status still says what failed.
            let _ = stderr.read_to_end(&mut text).await;
            text
        });
        // `qemu-img -p` rewrites one line with `\r`: `    (42.00/100%)`.
        let mut buffer = [0u8; 256];
        let mut line = Vec::new();
        let mut last = None;
        loop {
            let read = stdout
                .read(&mut buffer)
                .await
                .map_err(|error| spawn_error(program, &error))?;
            if read == 0 {
                break;
            }
            for &byte in &buffer[..read] {
                if byte == b'\r' || byte == b'\n' {
                    if let Some(percent) = parse_progress(&String::from_utf8_lossy(&line))
                        && last != Some(percent)
                    {
                        last = Some(percent);
                        progress(percent);
                    }
                    line.clear();
                } else {
                    line.push(byte);
                }
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|error| spawn_error(program, &error))?;
        let stderr = errors.await.unwrap_or_default();
        finished(program, status, &[], &stderr).map(|_| ())
    }
}

#[async_trait]
impl LvmSeam for LvmTools {
    async fn report(&self) -> Result<LvmReport, LvmError> {
        let common = ["--reportformat", "json", "--units", "b", "--nosuffix", "-o"];
        let vg_args: Vec<String> = common
            .iter()
            .map(|a| (*a).to_owned())
            .chain([VG_FIELDS.to_owned()])
            .collect();
        let lv_args: Vec<String> = common
            .iter()
            .map(|a| (*a).to_owned())
            .chain([LV_FIELDS.to_owned()])
            .collect();
        let device_mapper = tokio::task::spawn_blocking(super::probe::kernel_lacks_device_mapper);
        let (vgs, lvs, device_mapper) = tokio::join!(
            self.lvm("vgs", &vg_args),
            self.lvm("lvs", &lv_args),
            device_mapper
        );
        let unreadable = |program: &str, message: String| LvmError::Unreadable {
            program: program.to_owned(),
            message,
        };
        Ok(LvmReport {
            vgs: parse_vgs(&vgs?).map_err(|m| unreadable("vgs", m))?,
            lvs: parse_lvs(&lvs?).map_err(|m| unreadable("lvs", m))?,
            no_device_mapper: device_mapper.unwrap_or_else(|join| {
                Some(format!(
                    "checking the kernel for device-mapper failed: {join}"
                ))
            }),
        })
    }

    async fn inspect_image(&self, path: &Path) -> Result<ImageInfo, LvmError> {
        let program = "qemu-img";
        let path = path.to_string_lossy();
        let mut command = Self::command(program);
        command.args(["info", "--output", "json", &path]);
        let output = tokio::time::timeout(LVM_DEADLINE, command.output())
            .await
            .map_err(|_| LvmError::TimedOut {
                program: program.to_owned(),
                seconds: LVM_DEADLINE.as_secs(),
            })?
            .map_err(|error| spawn_error(program, &error))?;
        let json = finished(program, output.status, &output.stdout, &output.stderr)?;
        parse_image_info(&json).map_err(|message| LvmError::Unreadable {
            program: program.to_owned(),
            message,
        })
    }

    async fn send(&self, request: &LvmRequest, progress: ProgressSink<'_>) -> Result<(), LvmError> {
        match request {
            LvmRequest::WriteImage {
                image,
                format,
                device,
            } => return self.write_image(image, format, device, progress).await,
            LvmRequest::MakeFilesystem { device, filesystem } => {
                let device = device.to_string_lossy();
                let (program, args): (&str, Vec<&str>) = match filesystem {
                    Filesystem::Ext4 => ("mkfs.ext4", vec!["-q", "-F", &device]),
                    Filesystem::Xfs => ("mkfs.xfs", vec!["-q", "-f", &device]),
                    Filesystem::Btrfs => ("mkfs.btrfs", vec!["-q", "-f", &device]),
                    Filesystem::Swap => ("mkswap", vec!["-f", &device]),
                };
                return self.long(program, &args).await.map(|_| ());
            }
            LvmRequest::GrowFilesystem { device, filesystem } => {
                if !matches!(filesystem, Filesystem::Ext4 | Filesystem::Xfs) {
                    return Err(LvmError::Spawn {
                        program: "fsadm".into(),
                        message: "gitvisor grows ext4 and xfs only".into(),
                    });
                }
                let device = device.to_string_lossy();
                return self
                    .long("fsadm", &["--yes", "resize", &device])
                    .await
                    .map(|_| ());
            }
            _ => {}
        }
        let Some((program, args)) = lvm_argv(request) else {
            return Err(LvmError::Spawn {
                program: "lvm".into(),
                message: format!("no lvm2 command for the request to {request}"),
            });
        };
        match self.lvm(program, &args).await {
            Ok(_) => Ok(()),
            Err(error) => {
                if self.already_done(request).await {
                    tracing::debug!(%request, "already done: {error}");
                    Ok(())
                } else {
                    Err(error)
                }
            }
        }
    }
}

impl LvmTools {
    /// Whether a failed request's effect is there anyway (checked, never assumed).
    async fn already_done(&self, request: &LvmRequest) -> bool {
        let Ok(report) = self.report().await else {
            return false;
        };
        let find = |vg: &str, name: &str| {
            report
                .lvs
                .iter()
                .find(|lv| lv.vg == vg && lv.name == name)
                .cloned()
        };
        match request {
            LvmRequest::Remove { vg, name } => find(vg, name).is_none(),
            LvmRequest::Extend { vg, name, size } => {
                find(vg, name).is_some_and(|lv| lv.size >= *size)
            }
            _ => false,
        }
    }
}

/// The lvm2 command line of a request, for those lvm2 carries out.
pub fn lvm_argv(request: &LvmRequest) -> Option<(&'static str, Vec<String>)> {
    let tags = |tags: &[String]| -> Vec<String> {
        tags.iter()
            .flat_map(|tag| ["--addtag".to_owned(), tag.clone()])
            .collect()
    };
    Some(match request {
        LvmRequest::Create {
            vg,
            name,
            size,
            thin_pool,
            tags: create_tags,
        } => {
            let mut args = vec!["--yes".into(), "--name".into(), name.clone()];
            match thin_pool {
                Some(pool) => args.extend([
                    "--virtualsize".into(),
                    format!("{size}b"),
                    "--thinpool".into(),
                    pool.clone(),
                ]),
                None => args.extend(["--size".into(), format!("{size}b")]),
            }
            args.extend(tags(create_tags));
            args.push(vg.clone());
            ("lvcreate", args)
        }
        LvmRequest::Snapshot {
            vg,
            origin,
            name,
            size,
            tags: snapshot_tags,
        } => {
            let mut args = vec![
                "--yes".into(),
                "--snapshot".into(),
                "--name".into(),
                name.clone(),
                // Thin snapshots skip activation by default; a Volume is a usable device.
                "--setactivationskip".into(),
                "n".into(),
                "--activate".into(),
                "y".into(),
            ];
            if let Some(size) = size {
                args.extend(["--size".into(), format!("{size}b")]);
            }
            args.extend(tags(snapshot_tags));
            args.push(format!("{vg}/{origin}"));
            ("lvcreate", args)
        }
        LvmRequest::ChangeTags {
            vg,
            name,
            add,
            remove,
        } => {
            let mut args = tags(add);
            args.extend(
                remove
                    .iter()
                    .flat_map(|tag| ["--deltag".to_owned(), tag.clone()]),
            );
            args.push(format!("{vg}/{name}"));
            ("lvchange", args)
        }
        LvmRequest::Extend { vg, name, size } => (
            "lvextend",
            vec!["--size".into(), format!("{size}b"), format!("{vg}/{name}")],
        ),
        LvmRequest::Remove { vg, name } => {
            ("lvremove", vec!["--yes".into(), format!("{vg}/{name}")])
        }
        LvmRequest::MakeFilesystem { .. }
        | LvmRequest::GrowFilesystem { .. }
        | LvmRequest::WriteImage { .. } => return None,
    })
}

fn finished(
    program: &str,
    status: std::process::ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
) -> Result<String, LvmError> {
    if status.success() {
        return Ok(String::from_utf8_lossy(stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(stderr);
    let stderr = stderr
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(LvmError::Failed {
        program: program.to_owned(),
        status: status.to_string(),
        stderr,
    })
}

fn spawn_error(program: &str, error: &std::io::Error) -> LvmError {
    if error.kind() == std::io::ErrorKind::NotFound {
        LvmError::NotInstalled {
            program: program.to_owned(),
        }
    } else {
        LvmError::Spawn {
            program: program.to_owned(),
            message: error.to_string(),
        }
    }
}

/// `(42.00/100%)` → 42.
fn parse_progress(line: &str) -> Option<u8> {
    let inner = line.trim().strip_prefix('(')?.strip_suffix("/100%)")?;
    let value: f64 = inner.parse().ok()?;
    // Clamped to 0..=100 first, so the conversion cannot truncate.
    Some(value.clamp(0.0, 100.0) as u8)
}

fn parse_image_info(json: &str) -> Result<ImageInfo, String> {
    #[derive(serde::Deserialize)]
    struct Info {
        format: String,
        #[serde(rename = "virtual-size")]
        virtual_size: u64,
    }
    let info: Info =
        serde_json::from_str(json).map_err(|e| format!("not a qemu-img info JSON report: {e}"))?;
    Ok(ImageInfo {
        format: info.format,
        virtual_size: info.virtual_size,
    })
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_ride_on_the_create_and_sizes_are_bytes() {
        let (program, args) = lvm_argv(&LvmRequest::Create {
            vg: "vg0".into(),
            name: "data".into(),
            size: 1 << 30,
            thin_pool: Some("pool".into()),
            tags: vec!["gitvisor:managed".into(), "gitvisor:id=Volume/data".into()],
        })
        .unwrap();
        assert_eq!(program, "lvcreate");
        assert_eq!(
            args,
            [
                "--yes",
                "--name",
                "data",
                "--virtualsize",
                "1073741824b",
                "--thinpool",
                "pool",
                "--addtag",
                "gitvisor:managed",
                "--addtag",
                "gitvisor:id=Volume/data",
                "vg0"
            ]
        );
        let (_, args) = lvm_argv(&LvmRequest::ChangeTags {
            vg: "vg0".into(),
            name: "data".into(),
            add: vec!["a".into()],
            remove: vec!["b".into()],
        })
        .unwrap();
        assert_eq!(args, ["--addtag", "a", "--deltag", "b", "vg0/data"]);
    }

    #[test]
    fn qemu_img_progress_and_info_are_read() {
        assert_eq!(parse_progress("    (42.50/100%)"), Some(42));
        assert_eq!(parse_progress("(100.00/100%)"), Some(100));
        assert_eq!(parse_progress("Formatting"), None);
        let info =
            parse_image_info(r#"{"virtual-size": 8388608, "format": "qcow2", "actual-size": 1}"#)
                .unwrap();
        assert_eq!(
            info,
            ImageInfo {
                format: "qcow2".into(),
                virtual_size: 8 << 20
            }
        );
    }
}
