//! Reading the JSON reports of `vgs` and `lvs` (`--reportformat json --units b
//! --nosuffix` with explicit `-o` fields) into typed values.
//!
//! lvm2 prints every value as a string (`"lv_size":"1073741824"`, an empty string for
//! "none"), so each field is parsed here, and a value that does not parse is an error
//! naming the field, never a silent default.

use serde::Deserialize;

use super::seam::{LvKind, LvState, VgState};

/// The `-o` fields `vgs` is asked for, in the order the report types read them.
pub const VG_FIELDS: &str = "vg_name,vg_size,vg_free,vg_extent_size,vg_free_count";
/// The `-o` fields `lvs` is asked for.
pub const LV_FIELDS: &str = "lv_name,vg_name,lv_size,lv_tags,lv_attr,segtype,pool_lv,origin,lv_device_open,data_percent,metadata_percent";

#[derive(Deserialize)]
struct Report<T> {
    report: Vec<T>,
}

#[derive(Deserialize)]
struct VgSection {
    vg: Vec<RawVg>,
}

#[derive(Deserialize)]
struct LvSection {
    lv: Vec<RawLv>,
}

#[derive(Deserialize)]
struct RawVg {
    vg_name: String,
    vg_size: String,
    vg_free: String,
    vg_extent_size: String,
    vg_free_count: String,
}

#[derive(Deserialize)]
struct RawLv {
    lv_name: String,
    vg_name: String,
    lv_size: String,
    lv_tags: String,
    lv_attr: String,
    segtype: String,
    pool_lv: String,
    origin: String,
    lv_device_open: String,
    data_percent: String,
    metadata_percent: String,
}

/// `vgs`' report.
pub fn parse_vgs(json: &str) -> Result<Vec<VgState>, String> {
    let report: Report<VgSection> =
        serde_json::from_str(json).map_err(|e| format!("not a vgs JSON report: {e}"))?;
    let mut vgs = Vec::new();
    for raw in report.report.into_iter().flat_map(|section| section.vg) {
        let what = format!("volume group {}", raw.vg_name);
        vgs.push(VgState {
            size: number(&what, "vg_size", &raw.vg_size)?,
            free: number(&what, "vg_free", &raw.vg_free)?,
            extent_size: number(&what, "vg_extent_size", &raw.vg_extent_size)?,
            free_extents: number(&what, "vg_free_count", &raw.vg_free_count)?,
            name: raw.vg_name,
        });
    }
    Ok(vgs)
}

/// `lvs`' report, hidden LVs (`[pool_tdata]`) left out.
pub fn parse_lvs(json: &str) -> Result<Vec<LvState>, String> {
    let report: Report<LvSection> =
        serde_json::from_str(json).map_err(|e| format!("not an lvs JSON report: {e}"))?;
    let mut lvs = Vec::new();
    for raw in report.report.into_iter().flat_map(|section| section.lv) {
        if raw.lv_name.starts_with('[') {
            continue;
        }
        let what = format!("logical volume {}/{}", raw.vg_name, raw.lv_name);
        let volume_type = raw.lv_attr.chars().next().unwrap_or('-');
        let kind = match raw.segtype.as_str() {
            "thin-pool" => LvKind::ThinPool,
            "thin" => LvKind::Thin {
                pool: raw.pool_lv.clone(),
            },
            _ if volume_type == 's' || volume_type == 'S' => LvKind::Snapshot,
            "linear" | "striped" => LvKind::Plain,
            segtype if segtype.starts_with("raid") || segtype == "mirror" => LvKind::Plain,
            other => LvKind::Other(other.to_owned()),
        };
        lvs.push(LvState {
            size: number(&what, "lv_size", &raw.lv_size)?,
            tags: raw
                .lv_tags
                .split(',')
                .filter(|tag| !tag.is_empty())
                .map(str::to_owned)
                .collect(),
            kind,
            origin: (!raw.origin.is_empty()).then_some(raw.origin),
            has_classic_snapshots: volume_type == 'o',
            open: raw.lv_device_open == "open",
            data_percent: percent(&what, "data_percent", &raw.data_percent)?,
            metadata_percent: percent(&what, "metadata_percent", &raw.metadata_percent)?,
            vg: raw.vg_name,
            name: raw.lv_name,
        });
    }
    Ok(lvs)
}

fn number(what: &str, field: &str, text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{what}: {field} {text:?} is not a number of bytes"))
}

fn percent(what: &str, field: &str, text: &str) -> Result<Option<f64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{what}: {field} {text:?} is not a percentage"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What lvm2 2.03.16 printed in the test guest (trimmed).
    const LVS: &str = r#"  {
      "report": [
          {
              "lv": [
                  {"lv_name":"lin2", "vg_name":"vgt", "lv_size":"12582912", "lv_tags":"", "lv_attr":"owi-aos---", "segtype":"linear", "pool_lv":"", "origin":"", "lv_device_open":"open", "data_percent":"", "metadata_percent":""},
                  {"lv_name":"[lvol0_pmspare]", "vg_name":"vgt", "lv_size":"4194304", "lv_tags":"", "lv_attr":"ewi-------", "segtype":"linear", "pool_lv":"", "origin":"", "lv_device_open":"unknown", "data_percent":"", "metadata_percent":""},
                  {"lv_name":"pool", "vg_name":"vgt", "lv_size":"209715200", "lv_tags":"", "lv_attr":"twi-aotz--", "segtype":"thin-pool", "pool_lv":"", "origin":"", "lv_device_open":"open", "data_percent":"37.53", "metadata_percent":"11.13"},
                  {"lv_name":"snap1", "vg_name":"vgt", "lv_size":"12582912", "lv_tags":"gitvisor:managed,gitvisor:id=Volume/snap1", "lv_attr":"Vwi---tz-k", "segtype":"thin", "pool_lv":"pool", "origin":"thin1", "lv_device_open":"unknown", "data_percent":"", "metadata_percent":""},
                  {"lv_name":"snap3", "vg_name":"vgt", "lv_size":"8388608", "lv_tags":"", "lv_attr":"swi-a-s---", "segtype":"linear", "pool_lv":"", "origin":"lin2", "lv_device_open":"", "data_percent":"0.00", "metadata_percent":""}
              ]
          }
      ]
  }
"#;

    #[test]
    fn lvs_reads_kinds_tags_and_use() {
        let lvs = parse_lvs(LVS).unwrap();
        let names: Vec<&str> = lvs.iter().map(|lv| lv.name.as_str()).collect();
        assert_eq!(
            names,
            ["lin2", "pool", "snap1", "snap3"],
            "hidden LVs left out"
        );
        assert_eq!(lvs[0].kind, LvKind::Plain);
        assert!(lvs[0].open && lvs[0].has_classic_snapshots);
        assert_eq!(lvs[1].kind, LvKind::ThinPool);
        assert_eq!(lvs[1].data_percent, Some(37.53));
        assert_eq!(
            lvs[2].kind,
            LvKind::Thin {
                pool: "pool".into()
            }
        );
        assert_eq!(lvs[2].origin.as_deref(), Some("thin1"));
        assert_eq!(
            lvs[2].tags,
            ["gitvisor:managed", "gitvisor:id=Volume/snap1"]
        );
        assert!(!lvs[2].open);
        assert_eq!(lvs[3].kind, LvKind::Snapshot);
        assert_eq!(lvs[3].size, 8 << 20);
    }

    #[test]
    fn vgs_reads_sizes_in_bytes_and_a_bad_number_is_an_error() {
        let vgs = parse_vgs(
            r#"{"report":[{"vg":[{"vg_name":"vgt","vg_size":"1069547520","vg_free":"851443712","vg_extent_size":"4194304","vg_free_count":"203"}]}]}"#,
        )
        .unwrap();
        assert_eq!(vgs[0].extent_size, 4 << 20);
        assert_eq!(vgs[0].free_extents, 203);
        let bad = parse_vgs(
            r#"{"report":[{"vg":[{"vg_name":"vgt","vg_size":"1.00g","vg_free":"0","vg_extent_size":"4194304","vg_free_count":"0"}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(
            bad,
            "volume group vgt: vg_size \"1.00g\" is not a number of bytes"
        );
        assert!(parse_lvs("WARNING: nothing").is_err());
    }
}
