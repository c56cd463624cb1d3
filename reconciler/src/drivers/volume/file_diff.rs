//! The decision table of file volumes (`spec.directory`): declared Volumes and the
//! observed files in, one [`Change`] per declared or pruned file volume out. Pure.
//!
//! | at `DIR/NAME.FORMAT`                          | plan                                |
//! |-----------------------------------------------|-------------------------------------|
//! | nothing                                       | `Create` (image, clone, or empty)   |
//! | nothing; ours in the other format             | `Replace` if reclaimPolicy Delete   |
//! | a file that is not ours (no marker, no record)| `Conflict` (`Update` with adopt)    |
//! | ours, in another format than its name says    | `Conflict`                          |
//! | ours, smaller than declared                   | `Update` (grow)                     |
//! | ours, larger than declared                    | `Conflict`: shrinking is refused    |
//! | ours, another reclaim policy                  | `Update` (the xattr)                |
//! | ours, as declared                             | `NoOp`                              |
//!
//! A `.NAME.FORMAT.partial` (an interrupted creation) is removed before the create runs
//! again when it is provably gitvisor's (marker, or the store's record: the crash can
//! only come after the marker, but the rule is the shared one), and blocks the create
//! as a conflict otherwise; next to a complete file (a crash between the link and the
//! unlink that publish it) it is removed by an `Update`. A pruned file (ours, no longer declared) is a `Delete`:
//! Retain takes the xattrs off and leaves the file; Delete removes it, unless another
//! file's qcow2 header names it as its backing file (a clone would lose its base): then
//! the plan refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::files::{FileContent, FileState, PARTIAL_SUFFIX};
use super::seam::ImageInfo;
use super::size::show_bytes;
use crate::contract::{
    Action, Change, Effect, Evidence, FieldChange, Leftover, Marker, Ownership, PlanContext, Prune,
};
use crate::drivers::volume::{Backing, FileFormat, ReclaimPolicy, VolumeSource, VolumeSpec};
use crate::model::{Kind, Name, Resource, ResourceId};

/// qcow2 sizes are whole 512-byte sectors; so are raw ones, for the guest's sake.
const SECTOR: u64 = 512;

/// The observed files, by path.
#[derive(Debug, Default)]
pub struct HostFiles {
    files: BTreeMap<PathBuf, FileState>,
}

impl HostFiles {
    pub fn new(files: Vec<FileState>) -> Self {
        HostFiles {
            files: files.into_iter().map(|f| (f.path.clone(), f)).collect(),
        }
    }

    fn get(&self, path: &Path) -> Option<&FileState> {
        self.files.get(path)
    }

    /// The files whose qcow2 header names `path` as their backing file.
    fn clones_of(&self, path: &Path) -> Vec<&FileState> {
        self.files
            .values()
            .filter(|f| f.backing.as_deref().map(Path::new) == Some(path))
            .collect()
    }
}

/// What apply needs about one file volume, as the plan saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedFile {
    pub directory: PathBuf,
    /// `DIR/NAME.FORMAT`.
    pub path: PathBuf,
    /// `DIR/.NAME.FORMAT.partial`, where a creation writes.
    pub partial: PathBuf,
    pub format: FileFormat,
    /// The declared size, whole sectors.
    pub size: u64,
    /// The file under `path`, when there is one.
    pub file: Option<FileState>,
    /// What a create removes first: its own leftover `.partial`, the old-format file.
    pub remove_first: Vec<PathBuf>,
    pub content: FileContent,
    /// An update: grow from → to.
    pub grow: Option<(u64, u64)>,
    /// An update: write the marker and reclaim policy (adoption, a new policy).
    pub mark: bool,
    /// A pruned volume kept (reclaimPolicy Retain).
    pub retain: bool,
}

/// The partial (temporary) path of `path`.
pub fn partial_of(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}{PARTIAL_SUFFIX}"))
}

fn marker(file: &FileState, name: &str) -> Marker {
    if file.marked_for(name) {
        Marker::Ours
    } else if let Some(other) = &file.owner {
        Marker::Foreign(other.clone())
    } else {
        Marker::Absent
    }
}

/// The change for one declared file volume. `images`: the inspected source images;
/// a creation from an image not in it adds the image to `uninspected`.
pub(crate) fn declared(
    resource: &Arc<Resource>,
    spec: &VolumeSpec,
    host: &HostFiles,
    context: &PlanContext,
    images: &BTreeMap<String, Result<ImageInfo, String>>,
    uninspected: &mut BTreeSet<String>,
) -> Change {
    let id = resource.id();
    let name = id.name.as_str();
    let change = Change::new(id.clone(), Action::NoOp).with_desired(Arc::clone(resource));
    let Backing::File { directory, format } = spec.backing() else {
        return refused(change, "not a file volume".into(), None);
    };
    let path = spec.path(name);
    let size = spec.size.bytes().div_ceil(SECTOR) * SECTOR;
    let mut observed = ObservedFile {
        directory: PathBuf::from(directory),
        partial: partial_of(&path),
        path: path.clone(),
        format,
        size,
        file: None,
        remove_first: Vec::new(),
        content: FileContent::Empty,
        grow: None,
        mark: false,
        retain: false,
    };
    let recorded = context.is_recorded(&id);
    let Some(file) = host.get(&path) else {
        let mut change = Change {
            action: Action::Create,
            ..change
        }
        .with_fields(vec![
            FieldChange::new(
                "directory",
                serde_json::Value::Null,
                directory,
                Effect::Recreate,
            ),
            FieldChange::new(
                "format",
                serde_json::Value::Null,
                format.as_str(),
                Effect::Recreate,
            ),
            FieldChange::new(
                "size",
                serde_json::Value::Null,
                show_bytes(size),
                Effect::Recreate,
            ),
        ]);
        if let Some(leftover) = host.get(&observed.partial) {
            match Evidence::new(marker(leftover, name), recorded).leftover() {
                Leftover::Remove => {
                    observed.remove_first.push(leftover.path.clone());
                    change = change.with_reason(format!(
                        "an earlier creation stopped before {} was complete; its leftover {} is removed and the volume made again",
                        path.display(),
                        leftover.path.display()
                    ));
                }
                Leftover::Unproven => {
                    return refused(
                        change,
                        format!(
                            "{} exists and is not provably gitvisor's; gitvisor makes volume {name} there first and will not touch it: move it away",
                            leftover.path.display()
                        ),
                        Some(observed),
                    );
                }
            }
        }
        let other = match format {
            FileFormat::Qcow2 => FileFormat::Raw,
            FileFormat::Raw => FileFormat::Qcow2,
        };
        let other_path = path.with_extension(other.as_str());
        if let Some(old) = host.get(&other_path)
            && Evidence::new(marker(old, name), recorded).is_ours()
        {
            let field =
                FieldChange::new("format", other.as_str(), format.as_str(), Effect::Recreate);
            if spec.reclaim_policy != ReclaimPolicy::Delete {
                return refused(
                    change.with_fields(vec![field]),
                    format!(
                        "changing format of volume {name} ({} → {}) means making a new file and deleting {} with its data; refused because reclaimPolicy is Retain. Set reclaimPolicy: Delete to allow it, or revert format",
                        other.as_str(),
                        format.as_str(),
                        other_path.display()
                    ),
                    Some(observed),
                );
            }
            observed.remove_first.push(other_path.clone());
            change = Change {
                action: Action::Replace,
                ..change
            }
            .with_reason(format!(
                "changing format recreates the volume: {} and its data are deleted (reclaimPolicy: Delete)",
                other_path.display()
            ));
        }
        return creation(change, spec, observed, context, images, uninspected);
    };

    observed.file = Some(file.clone());
    // A crash between the link and the unlink of a publish leaves the `.partial` as a
    // second name of the complete file: it goes.
    let leftover = host
        .get(&observed.partial)
        .filter(|p| Evidence::new(marker(p, name), recorded).leftover() == Leftover::Remove)
        .map(|p| p.path.clone());
    let adopting = match Evidence::new(marker(file, name), recorded).declared(
        format_args!("file {}", path.display()),
        resource.metadata.adopt(),
    ) {
        Ownership::Ours => false,
        Ownership::Adopt => true,
        Ownership::Conflict(reason) => return refused(change, reason, Some(observed)),
    };
    if file.format != format {
        return refused(
            change,
            format!(
                "{} holds a {} image, but its name and spec.format say {}; rename the file or fix spec.format",
                path.display(),
                file.format.as_str(),
                format.as_str()
            ),
            Some(observed),
        );
    }
    if size < file.virtual_size {
        return refused(
            change,
            format!(
                "shrinking is refused: volume {name} ({}) is {} and declares {}; shrinking would destroy the data past the new end. Declare at least {}, or make a new volume and copy the data",
                path.display(),
                show_bytes(file.virtual_size),
                show_bytes(size),
                show_bytes(file.virtual_size)
            ),
            Some(observed),
        );
    }
    let mut fields = Vec::new();
    if size > file.virtual_size {
        observed.grow = Some((file.virtual_size, size));
        fields.push(FieldChange::new(
            "size",
            show_bytes(file.virtual_size),
            show_bytes(size),
            Effect::Hot,
        ));
    }
    // Adopting sets the marker; once it is on (the store records the adoption after
    // the apply's check), there is nothing left to do.
    if !file.marked_for(name) || file.reclaim != Some(spec.reclaim_policy) {
        observed.mark = true;
        fields.push(FieldChange::new(
            "reclaimPolicy",
            file.reclaim.map(|p| format!("{p:?}")),
            format!("{:?}", spec.reclaim_policy),
            Effect::Hot,
        ));
    }
    let mut notes = Vec::new();
    if let Some(leftover) = leftover {
        notes.push(format!(
            "{} is the leftover of an interrupted creation: removed",
            leftover.display()
        ));
        observed.remove_first.push(leftover);
    }
    let action = if observed.grow.is_some() || observed.mark || !observed.remove_first.is_empty() {
        Action::Update
    } else {
        Action::NoOp
    };
    let mut change = Change { action, ..change }.with_fields(fields);
    for note in notes {
        change = change.with_reason(note);
    }
    if adopting {
        change = change.with_first_reason(format!(
            "adopting {} (gitvisor.dev/adopt): gitvisor's marker is set on it",
            path.display()
        ));
    }
    change.with_observed(observed)
}

/// A create or replace: what the new file starts with, checked.
fn creation(
    change: Change,
    spec: &VolumeSpec,
    mut observed: ObservedFile,
    context: &PlanContext,
    images: &BTreeMap<String, Result<ImageInfo, String>>,
    uninspected: &mut BTreeSet<String>,
) -> Change {
    let size = observed.size;
    match &spec.source {
        None => {}
        Some(source) if source.image().is_some() => {
            let image = source.image().unwrap_or_default();
            match images.get(image) {
                Some(Ok(info)) if info.virtual_size > size => {
                    return refused(
                        change,
                        format!(
                            "source image {image} holds a {} disk, larger than the volume ({}); declare a size of at least {}",
                            show_bytes(info.virtual_size),
                            show_bytes(size),
                            show_bytes(info.virtual_size)
                        ),
                        Some(observed),
                    );
                }
                Some(Ok(info)) => {
                    observed.content = FileContent::Image {
                        image: PathBuf::from(image),
                        format: info.format.clone(),
                    };
                }
                Some(Err(why)) => {
                    return refused(
                        change,
                        format!("source image {image} cannot be read: {why}"),
                        Some(observed),
                    );
                }
                None => {
                    uninspected.insert(image.to_owned());
                    return refused(
                        change,
                        format!("source image {image} is not inspected yet"),
                        Some(observed),
                    );
                }
            }
        }
        Some(VolumeSource::Url { url, .. }) => {
            observed.content = FileContent::Download;
            return change
                .with_reason(format!(
                    "the image is downloaded from {url} into gitvisor's image cache (once), verified, then copied in"
                ))
                .with_observed(observed);
        }
        Some(source) => {
            let Some(base_id) = source.clone_of() else {
                return refused(
                    change,
                    format!("a file volume cannot start from {source}; use cloneOf"),
                    Some(observed),
                );
            };
            match clone_base(base_id, size, context) {
                Ok(base) => observed.content = FileContent::Clone { base },
                Err(reason) => return refused(change, reason, Some(observed)),
            }
        }
    }
    change.with_observed(observed)
}

/// The base file of a clone, from the base's declaration: a qcow2 file volume no larger
/// than the clone. (The graph creates the base first.)
fn clone_base(base_id: &ResourceId, size: u64, context: &PlanContext) -> Result<PathBuf, String> {
    let Some(base) = context.referenced(Kind::Volume, &base_id.name) else {
        return Err(format!(
            "the clone's base {base_id} is not declared for this host; declare it, or fix spec.source.cloneOf"
        ));
    };
    let Some(base_spec) = base.spec.get::<VolumeSpec>() else {
        return Err(format!("the clone's base {base_id} is not a Volume"));
    };
    match base_spec.backing() {
        Backing::File {
            format: FileFormat::Qcow2,
            ..
        } => {}
        Backing::File { .. } => {
            return Err(format!(
                "the clone's base {base_id} is a raw file; a clone's base must be a qcow2 file volume (format: qcow2)"
            ));
        }
        Backing::Lvm { .. } => {
            return Err(format!(
                "the clone's base {base_id} is an LVM volume; a clone's base must be a file volume (spec.directory), or use snapshotOf between LVM volumes"
            ));
        }
    }
    let base_size = base_spec.size.bytes().div_ceil(SECTOR) * SECTOR;
    if size < base_size {
        return Err(format!(
            "a clone is at least as big as its base {base_id} ({}); declare a size of at least that",
            show_bytes(base_size)
        ));
    }
    Ok(base_spec.path(base_id.name.as_str()))
}

fn refused(change: Change, reason: String, observed: Option<ObservedFile>) -> Change {
    let change = Change {
        action: Action::Conflict,
        ..change
    }
    .with_first_reason(reason);
    match observed {
        Some(observed) => change.with_observed(observed),
        None => change,
    }
}

/// Deletes for the files of gitvisor's whose Volume is no longer declared (as a file
/// volume or otherwise: `declared` holds every declared Volume's name).
pub(crate) fn pruned(
    declared: &BTreeSet<&str>,
    host: &HostFiles,
    context: &PlanContext,
) -> Vec<Change> {
    let mut deletes = Vec::new();
    for file in host.files.values() {
        let Some(owner) = file
            .owner
            .as_deref()
            .and_then(|o| o.strip_prefix("Volume/"))
        else {
            continue;
        };
        let Ok(name) = Name::parse(owner) else {
            continue;
        };
        if declared.contains(owner) {
            continue;
        }
        let file_name = file
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let partial = file_name.ends_with(PARTIAL_SUFFIX);
        let expected = [FileFormat::Qcow2, FileFormat::Raw]
            .iter()
            .any(|f| file_name == format!("{owner}.{}", f.as_str()));
        if !partial && !expected {
            continue;
        }
        let id = ResourceId::new(Kind::Volume, name);
        let recorded = context.is_recorded(&id);
        match Evidence::new(marker(file, owner), recorded).undeclared() {
            Prune::Delete => deletes.push(prune(id, file, partial, host)),
            Prune::KeepAndWarn(why) => tracing::warn!(file = %file.path.display(), "{why}"),
            Prune::Keep => {}
        }
    }
    deletes
}

fn prune(id: ResourceId, file: &FileState, partial: bool, host: &HostFiles) -> Change {
    let retain = !partial && file.reclaim != Some(ReclaimPolicy::Delete);
    let observed = ObservedFile {
        directory: file.path.parent().map(Path::to_owned).unwrap_or_default(),
        path: file.path.clone(),
        partial: partial_of(&file.path),
        format: file.format,
        size: file.virtual_size,
        file: Some(file.clone()),
        remove_first: Vec::new(),
        content: FileContent::Empty,
        grow: None,
        mark: false,
        retain,
    };
    let shown = file.path.display();
    let change = Change::new(id, Action::Delete).with_reason("no longer declared");
    if partial {
        return change
            .with_reason(format!(
                "{shown} is the leftover of an interrupted creation: removed"
            ))
            .with_observed(observed);
    }
    if retain {
        return change
            .with_reason(format!(
                "reclaimPolicy is Retain: gitvisor forgets the volume; {shown} and its data stay (only gitvisor's xattrs are removed)"
            ))
            .with_observed(observed);
    }
    let clones = host.clones_of(&file.path);
    if !clones.is_empty() {
        let names: Vec<String> = clones
            .iter()
            .map(|c| c.path.display().to_string())
            .collect();
        return refused(
            change,
            format!(
                "{shown} is the backing file of {}; removing it would destroy them. Remove the clones first, or keep this volume",
                names.join(", ")
            ),
            Some(observed),
        );
    }
    change
        .with_reason(format!(
            "reclaimPolicy is Delete: {shown} and its data are removed"
        ))
        .with_observed(observed)
}
