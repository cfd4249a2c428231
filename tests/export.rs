//! `sluice export` on a ledger filled through the agent's own ledger code: a day of
//! 5-minute ticks for three instances, one of them hogging upload from 08:00 to 12:00,
//! penalised from 09:00 to 12:30 and counted by a daily quota rule. Each format is
//! checked for structure and for the exact numbers the ledger was given.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use sluice::account::ledger::EventRow;
use sluice::account::ledger::Journal;
use sluice::account::{Ledger, Observation};
use sluice::model::ids::{IfName, InstanceId};
use support::sluice_bin;

const DAY: &str = "2026-11-20";
const TICK: i64 = 300;

struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    config: PathBuf,
    /// (instance, upload, download) bytes the ledger was given for the day.
    totals: Vec<(&'static str, u64, u64)>,
}

fn upload_per_tick(instance: &str, hour: i64) -> u64 {
    match instance {
        "101" if (8..12).contains(&hour) => 3_000_000,
        "101" => 20_000,
        "102" => 400_000,
        _ => 1_000,
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("lib");
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\ninterfaces = ['^tap(?P<instance>[0-9]+)i[0-9]+$']\ndata_dir = \"{}\"\nstate_dir = \"{}\"\n[penalty]\nbase_rate = \"100mbit\"\n[[rule]]\nname = \"daily\"\nperiod = \"day\"\ntimezone = \"UTC\"\ndirection = \"upload\"\nlimit = \"500MB\"\naction = \"warn\"\ninstances = [\"101\"]\n",
            data.display(),
            dir.path().join("run").display()
        ),
    )
    .unwrap();
    let mut ledger = Ledger::open(&data.join("ledger.db"), "boot-test").unwrap();
    let start: Timestamp = format!("{DAY}T00:00:00Z").parse().unwrap();
    let names = ["101", "102", "103"];
    let ifs: Vec<IfName> = names
        .iter()
        .map(|n| IfName::new(&format!("tap{n}i0")).unwrap())
        .collect();
    let ids: Vec<InstanceId> = names.iter().map(|n| InstanceId::new(n).unwrap()).collect();
    let mut counters = [(0u64, 0u64); 3];
    let mut totals: Vec<(&str, u64, u64)> = names.iter().map(|n| (*n, 0, 0)).collect();
    let stage = |at: Timestamp, from: u64, to: u64| {
        EventRow::new(
            at,
            sluice::model::event::LogKind::Stage,
            Some(&InstanceId::new("101").unwrap()),
            json!({"interface": "tap101i0", "from": from, "to": to, "cause": if to > from { "escalated" } else { "expired" }, "instance_name": "web1"}),
        )
    };
    for t in 0..=(86_400 / TICK) {
        let at = start + jiff::SignedDuration::from_secs(t * TICK);
        if t > 0 {
            let hour = (t - 1) * TICK / 3600;
            for (i, n) in names.iter().enumerate() {
                let up = upload_per_tick(n, hour);
                let down = 50_000 * (i as u64 + 1);
                counters[i].0 += up;
                counters[i].1 += down;
                totals[i].1 += up;
                totals[i].2 += down;
            }
        }
        let obs: Vec<Observation> = (0..3)
            .map(|i| Observation {
                interface: &ifs[i],
                instance: &ids[i],
                ifindex: 10 + i as u32,
                rx_bytes: counters[i].0,
                tx_bytes: counters[i].1,
            })
            .collect();
        let secs = t * TICK;
        let events = match secs {
            32_400 => vec![stage(at, 0, 1)],
            39_600 => vec![stage(at, 1, 2)],
            45_000 => vec![stage(at, 2, 0)],
            _ => Vec::new(),
        };
        ledger
            .record_with(&obs, at, Duration::from_secs(TICK as u64), |_| Journal {
                events,
                ..Journal::default()
            })
            .unwrap();
    }
    Fixture {
        _dir: dir,
        data,
        config,
        totals,
    }
}

fn export(f: &Fixture, args: &[&str]) -> Output {
    Command::new(sluice_bin())
        .arg("export")
        .args(args)
        .args(["--date", DAY, "--tz", "UTC", "--data-dir"])
        .arg(&f.data)
        .arg("--config")
        .arg(&f.config)
        .output()
        .unwrap()
}

/// With `SLUICE_EXPORT_KEEP=DIR`, keep a copy of an output to look at.
fn keep(name: &str, bytes: &[u8]) {
    if let Some(dir) = std::env::var_os("SLUICE_EXPORT_KEEP") {
        std::fs::write(PathBuf::from(dir).join(name), bytes).unwrap();
    }
}

fn ok(out: Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// (width, height, share of pixels unlike the corner's, distinct colours) of a PNG.
fn png_facts(bytes: &[u8]) -> (u32, u32, f64, usize) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
    let corner = px[0];
    let differing = px.iter().filter(|p| *p != &corner).count();
    let mut colours: Vec<&[u8]> = px.clone();
    colours.sort_unstable();
    colours.dedup();
    (
        info.width,
        info.height,
        differing as f64 / px.len() as f64,
        colours.len(),
    )
}

/// The colour of the top-left pixel, and how many pixels are exactly `rgb`.
fn png_colour(bytes: &[u8], rgb: [u8; 3]) -> ([u8; 3], usize) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let px: Vec<&[u8]> = buf[..info.buffer_size()].chunks(3).collect();
    let corner = [px[0][0], px[0][1], px[0][2]];
    (corner, px.iter().filter(|p| **p == rgb).count())
}

#[test]
fn every_format_carries_the_ledgers_numbers() {
    let f = fixture();
    let (_, up101, down101) = f.totals[0];

    // JSON: the exact bytes, 24 hourly points, the penalty and the rule's count.
    let v: Value =
        serde_json::from_slice(&ok(export(&f, &["--instance", "101", "--format", "json"])))
            .unwrap();
    let s = &v["series"][0];
    assert_eq!(s["instance"], "101");
    assert_eq!(
        (s["upload_bytes"].as_u64(), s["download_bytes"].as_u64()),
        (Some(up101), Some(down101))
    );
    assert_eq!(s["points"].as_array().unwrap().len(), 24);
    assert_eq!(s["points"][9]["upload_bytes"], 12 * 3_000_000);
    assert_eq!(
        s["penalties"],
        json!([{"start": "2026-11-20T09:00:00Z", "end": "2026-11-20T12:30:00Z", "stage": 2}])
    );
    assert_eq!(s["quota"]["rule"], "daily");
    assert_eq!(s["quota"]["limit_bytes"], 500_000_000);
    assert_eq!(s["quota"]["used_bytes"][23], up101);
    assert_eq!(s["events"].as_array().unwrap().len(), 3);

    // CSV: one row per hour, summing to the same.
    let text =
        String::from_utf8(ok(export(&f, &["--instance", "101", "--format", "csv"]))).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(
        rows[0],
        "instance,interface,period_start,upload_bytes,download_bytes,estimated,instance_name"
    );
    assert_eq!(rows.len(), 25);
    // The name the instance's events were written with (its hypervisor's).
    assert!(
        rows[1..]
            .iter()
            .all(|r| r.starts_with("101,") && r.ends_with(",web1")),
        "{text}"
    );
    let sum: u64 = rows[1..]
        .iter()
        .map(|r| r.split(',').nth(3).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, up101);

    // SVG: a document of the right size with both series, the shading and the quota panel.
    let svg = String::from_utf8(ok(export(&f, &["--instance", "101", "--format", "svg"]))).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("width=\"1000\"") && svg.contains("height=\"640\""),
        "{}",
        &svg[..300]
    );
    assert!(svg.matches("<text").count() > 20, "axis labels");
    assert!(
        svg.matches("<polygon").count() + svg.matches("<path").count() >= 2,
        "two areas"
    );
    assert!(svg.contains("Instance 101"));
    assert!(svg.contains("Rule daily (upload)"), "quota panel");
    assert!(svg.contains("penalty") && svg.contains("upload") && svg.contains("download"));

    // PNG: right size, mostly drawn, many colours (anti-aliased text and fills).
    let png = ok(export(&f, &["--instance", "101", "--format", "png"]));
    keep("101.png", &png);
    keep("101.svg", svg.as_bytes());
    let (w, h, drawn, colours) = png_facts(&png);
    assert_eq!((w, h), (1000, 640));
    assert!(drawn > 0.03, "only {:.1}% of pixels drawn", drawn * 100.0);
    assert!(colours > 50, "{colours} colours");
    let dark = ok(export(
        &f,
        &["--instance", "101", "--format", "png", "--dark"],
    ));
    keep("101-dark.png", &dark);
    assert_ne!(&dark[..], &png[..]);
    // Each theme's background, and its upload and download series drawn in their own
    // colours (the palette of the README's charts: orange up, blue down).
    // (theme, background, upload, download)
    let themes = [
        (
            "light",
            &png,
            [0xff, 0xff, 0xff],
            [0xd9, 0x6c, 0x00],
            [0x09, 0x69, 0xda],
        ),
        (
            "dark",
            &dark,
            [0x16, 0x1b, 0x22],
            [0xff, 0x9e, 0x3d],
            [0x4c, 0xb8, 0xff],
        ),
    ];
    for (theme, bytes, background, upload, download) in themes {
        assert_eq!(
            png_colour(bytes, upload).0,
            background,
            "{theme} background"
        );
        let (_, up) = png_colour(bytes, upload);
        let (_, down) = png_colour(bytes, download);
        assert!(
            up > 200 && down > 200,
            "{theme}: {up} upload and {down} download pixels"
        );
    }

    // HTML: self-contained, with the totals and the events.
    let html =
        String::from_utf8(ok(export(&f, &["--instance", "all", "--format", "html"]))).unwrap();
    for (inst, up, down) in &f.totals {
        assert!(
            html.contains(&format!("<tr data-instance=\"{inst}\">")),
            "{inst}"
        );
        assert!(
            html.contains(&format!("data-bytes=\"{up}\"")),
            "{inst} upload"
        );
        assert!(
            html.contains(&format!("data-bytes=\"{}\"", up + down)),
            "{inst} total"
        );
    }
    keep("all.html", html.as_bytes());
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "a summary and three charts"
    );
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http") && !html.contains("<script")
    );
    assert!(html.contains("<td>stage</td>"));
    // The top talker comes first.
    assert!(html.find("data-instance=\"101\"") < html.find("data-instance=\"103\""));
}

/// On 5-minute points the export carries the day's 95th percentile and the chart draws
/// it: 101 sends 3 MB per interval for 48 of 288, 20 kB otherwise, so rank
/// ⌈0.95·288⌉ = 274 falls among the busy ones: 3 MB / 300 s = 80 kbit/s.
#[test]
fn five_minute_exports_carry_and_draw_the_95th_percentile() {
    let f = fixture();
    let v: Value = serde_json::from_slice(&ok(export(
        &f,
        &["--instance", "101", "--by", "5m", "--format", "json"],
    )))
    .unwrap();
    let p = &v["series"][0]["percentiles"];
    assert_eq!(
        (
            p["samples"].clone(),
            p["upload_bps"].clone(),
            p["download_bps"].clone()
        ),
        (json!(288), json!(80_000), json!(1_333)),
        "{p}"
    );
    let hourly: Value =
        serde_json::from_slice(&ok(export(&f, &["--instance", "101", "--format", "json"])))
            .unwrap();
    assert!(hourly["series"][0].get("percentiles").is_none());
    let svg = String::from_utf8(ok(export(
        &f,
        &["--instance", "101", "--by", "5m", "--format", "svg"],
    )))
    .unwrap();
    keep("101-5m.svg", svg.as_bytes());
    assert!(
        svg.contains("upload 95th: 80.0 kbit/s") && svg.contains("download 95th: 1.3 kbit/s"),
        "the 95th lines' legend is missing"
    );
}

#[test]
fn all_instances_as_images_need_a_directory_and_get_a_file_each() {
    let f = fixture();
    let out = export(&f, &["--instance", "all", "--format", "png"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out DIR"));
    let dir = f._dir.path().join("charts");
    ok(export(
        &f,
        &[
            "--instance",
            "all",
            "--format",
            "png",
            "--out",
            dir.to_str().unwrap(),
        ],
    ));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["101.png", "102.png", "103.png", "summary.png"]);
    let (w, h, drawn, _) = png_facts(&std::fs::read(dir.join("summary.png")).unwrap());
    assert_eq!((w, h), (1000, 120 + 28 * 3));
    assert!(drawn > 0.05);
    // 102 has no rule: one panel.
    let (_, h, _, _) = png_facts(&std::fs::read(dir.join("102.png")).unwrap());
    assert_eq!(h, 420);

    let bad = Command::new(sluice_bin())
        .args([
            "export",
            "--instance",
            "101",
            "--format",
            "json",
            "--date",
            "yesterday",
            "--data-dir",
        ])
        .arg(&f.data)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--date"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let missing = export(
        &f,
        &["--instance", "101", "--format", "json", "--rule", "nope"],
    );
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--rule \"nope\""));
}

/// `sluice usage --percentile 95` on the same ledger: per day, 101's four figures (the
/// larger direction and the sum taken per interval), the intervals ranked; bad
/// arguments are named.
#[test]
fn usage_percentile_reads_the_day_as_the_rank_rule_says() {
    let f = fixture();
    let usage = |extra: &[&str]| {
        let by = if extra.contains(&"--by") {
            &[][..]
        } else {
            &["--by", "day"][..]
        };
        Command::new(sluice_bin())
            .args(["usage", "--instance", "101", "--tz", "UTC"])
            .args(by)
            .args(["--from", DAY, "--to", "2026-11-21", "--data-dir"])
            .arg(&f.data)
            .args(extra)
            .output()
            .unwrap()
    };
    let v: Value = serde_json::from_slice(&ok(usage(&["--percentile", "95", "--json"]))).unwrap();
    let row = &v[0];
    // Busy intervals: 3 MB up, 50 kB down; the other 240: 20 kB up, 50 kB down.
    // Rank 274 of 288 is a busy one: max 3 MB, sum 3.05 MB → 80,000 and 81,333 bit/s.
    assert_eq!(
        (
            row["upload_bps"].clone(),
            row["download_bps"].clone(),
            row["max_bps"].clone(),
            row["aggregate_bps"].clone(),
            row["samples"].clone(),
            row["estimated"].clone()
        ),
        (
            json!(80_000),
            json!(1_333),
            json!(80_000),
            json!(81_333),
            json!(288),
            json!(0)
        ),
        "{v}"
    );
    assert_eq!(row["period"], "2026-11-20T00:00:00Z");
    let text = String::from_utf8(ok(usage(&["--percentile", "95"]))).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("UPLOAD p95") && lines[0].contains("LEFT OUT"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("2026-11-20")
            && lines[1].contains("80.0 kbit/s")
            && lines[1].contains("81.3 kbit/s"),
        "{text}"
    );
    for (args, named) in [
        (&["--percentile", "0"][..], "--percentile"),
        (&["--percentile", "95", "--by", "5m"][..], "--by 5m"),
    ] {
        let out = usage(args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{args:?}: {err}");
    }
}
