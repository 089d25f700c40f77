//! `cargo mesa`: lavapipe with libextmem inside, tested on the host next to Debian's own
//! lavapipe.
//!
//! Three steps: the build (`mesa_build`: packages, source, patch, libextmem, meson and
//! ninja, all cached); the project's external-memory checks (`tests/mesa`'s
//! `mesa-vk-checks`, the cases icd-e2e makes) run once against each driver through the
//! loader's `VK_DRIVER_FILES`, printed as two columns, the patched column being the
//! step's checks; and FFmpeg's Vulkan `hwupload,hwdownload` round trip on the patched
//! driver, frame hashes compared with a software round trip, with libextmem's count of
//! host imports (`EXTMEM_STATS`) required above zero.
//!
//! The Mesa build does not fit the suite (see the README for its time), so this is its own
//! command; the C API's tests stay in `cargo suite capi`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::console_log::StepOutput;
use crate::guest_suite::ktap_checks;
use crate::host_command;
use crate::ktap::{self, Status};
use crate::mesa_build::{self, PatchedLavapipe};
use crate::report::{self, Check, Step};
use crate::workspace::Workspace;

/// Debian's lavapipe (`mesa-vulkan-drivers`, from backports).
const STOCK_MANIFEST: &str = "/usr/share/vulkan/icd.d/lvp_icd.json";
/// The checks program of `tests/mesa`.
const CHECKS: &str = "mesa-vk-checks";
/// The stats line libextmem prints at `vkDestroyDevice` with `EXTMEM_STATS=1`.
const STATS_PREFIX: &str = "libextmem: device ";
/// The pixel formats of the FFmpeg round trip: packed RGB, and the two YUV layouts video
/// decoders hand to `hwupload` (two planes, three planes).
const FFMPEG_FORMATS: &[&str] = &["rgba", "nv12", "yuv420p"];
/// The FFmpeg source: a moving test pattern, so every frame differs.
const FFMPEG_SOURCE: &str = "testsrc2=size=1280x720:rate=10";
/// Frames per round trip.
const FFMPEG_FRAMES: &str = "20";

/// Runs the three steps.
pub fn run(workspace: &Workspace) -> Vec<Step> {
    let started = Instant::now();
    let mut build = Step::new("mesa: lavapipe patched to use libextmem (build)");
    build.list_passes = true;
    let patched =
        match mesa_build::provision_packages().and_then(|()| mesa_build::ensure(workspace)) {
            Ok(patched) => {
                build.notes.push(format!(
                    "Mesa {} with {}/*.patch, key {}",
                    patched.version,
                    mesa_build::PATCH_DIR,
                    patched.key
                ));
                build.notes.push(match patched.built_in {
                    Some(took) => format!("built in {}", report::seconds(took)),
                    None => "cached: the patches and libextmem are unchanged".to_owned(),
                });
                build.checks.push(Check::pass(format!(
                    "mesa: patched lavapipe ({})",
                    patched.manifest.display()
                )));
                Some(patched)
            }
            Err(err) => {
                build
                    .checks
                    .push(Check::fail("mesa: patched lavapipe", err.to_string()));
                None
            }
        };
    build.elapsed = started.elapsed();
    let Some(patched) = patched else {
        return vec![build];
    };
    vec![
        build,
        vulkan_checks(workspace, &patched),
        ffmpeg_round_trip(workspace, &patched),
    ]
}

/// One run of the checks program against one driver.
struct DriverRun {
    output: StepOutput,
    stderr: String,
}

/// Runs `program` with the loader pointed at `manifest` alone (and no implicit layer:
/// Debian installs Mesa's device-select layer).
fn loader_env<'c>(command: &'c mut Command, manifest: &Path) -> &'c mut Command {
    command
        .env("VK_DRIVER_FILES", manifest)
        .env("VK_ICD_FILENAMES", manifest)
        .env("VK_LOADER_LAYERS_DISABLE", "~implicit~")
        .env("EXTMEM_STATS", "1")
}

fn run_checks(program: &Path, manifest: &Path, name: &str) -> Result<DriverRun, String> {
    let mut command = Command::new(program);
    loader_env(&mut command, manifest);
    println!("mesa: {CHECKS} on {name} ({})", manifest.display());
    let out =
        host_command::capture(&mut command).map_err(|e| format!("{}: {e}", program.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(DriverRun {
        output: StepOutput {
            kind: "ktap".to_owned(),
            name: name.to_owned(),
            lines: stdout.lines().map(str::to_owned).collect(),
            exit_code: out.status.code(),
        },
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A KTAP result as a table cell.
fn cell(status: Option<&Status>) -> &'static str {
    match status {
        Some(Status::Pass) => "pass",
        Some(Status::Fail) => "FAIL",
        Some(Status::Skip { .. }) => "skip",
        None => "-",
    }
}

/// The two-column table: every result of either run, stock and patched side by side.
fn table(stock: &StepOutput, patched: &StepOutput) -> String {
    let stock_doc = ktap::parse(stock.lines.iter().map(String::as_str));
    let patched_doc = ktap::parse(patched.lines.iter().map(String::as_str));
    let mut out = String::from("| check | stock lavapipe | patched lavapipe |\n|---|---|---|\n");
    let count = stock_doc.results.len().max(patched_doc.results.len());
    for index in 0..count {
        let stock_result = stock_doc.results.get(index);
        let patched_result = patched_doc.results.get(index);
        let description = patched_result
            .or(stock_result)
            .map_or("?", |r| r.description.as_str());
        out.push_str(&format!(
            "| {description} | {} | {} |\n",
            cell(stock_result.map(|r| &r.status)),
            cell(patched_result.map(|r| &r.status))
        ));
    }
    let tally = |doc: &ktap::Document| {
        let passed = doc
            .results
            .iter()
            .filter(|r| r.status == Status::Pass)
            .count();
        format!("{passed}/{}", doc.results.len())
    };
    out.push_str(&format!(
        "| **passed** | **{}** | **{}** |\n",
        tally(&stock_doc),
        tally(&patched_doc)
    ));
    out
}

fn vulkan_checks(workspace: &Workspace, patched: &PatchedLavapipe) -> Step {
    let started = Instant::now();
    let mut step = Step::new("mesa: external-memory checks (tests/mesa) on patched lavapipe");
    step.list_passes = true;
    let program = match workspace.build_binaries("extmem-mesa-tests", &[CHECKS], None) {
        Ok(paths) => paths.into_iter().next(),
        Err(err) => {
            step.checks.push(Check::fail(
                format!("mesa: cargo build {CHECKS}"),
                err.to_string(),
            ));
            None
        }
    };
    if let Some(program) = program {
        let stock = run_checks(&program, Path::new(STOCK_MANIFEST), "stock lavapipe");
        let ours = run_checks(&program, &patched.manifest, "patched lavapipe");
        match ours {
            Ok(ours) => {
                step.checks.extend(ktap_checks(
                    "patched lavapipe",
                    Some(&ours.output),
                    "the program stopped",
                ));
                step.checks.push(loaded_check(&ours.stderr));
                if let Ok(stock) = &stock {
                    let text = table(&stock.output, &ours.output);
                    println!("{text}");
                    save(workspace, "vk-checks.md", &text, &mut step);
                    if stock.stderr.contains(STATS_PREFIX) {
                        step.checks.push(Check::fail(
                            "mesa: stock lavapipe is Debian's own",
                            "it printed libextmem's stats line",
                        ));
                    }
                }
            }
            Err(reason) => step.checks.push(Check::fail("patched lavapipe", reason)),
        }
        if let Err(reason) = stock {
            step.checks.push(Check::fail("stock lavapipe", reason));
        }
    }
    step.elapsed = started.elapsed();
    step
}

/// That the driver the loader took was the patched one: libextmem printed its stats.
fn loaded_check(stderr: &str) -> Check {
    let name = "mesa: the loader ran the patched lavapipe (libextmem's EXTMEM_STATS line)";
    if stderr.contains(STATS_PREFIX) {
        Check::pass(name)
    } else {
        Check::fail(name, format!("no line starting {STATS_PREFIX:?} on stderr"))
    }
}

/// Writes `text` to the runner's `mesa/` output directory and notes where.
fn save(workspace: &Workspace, name: &str, text: &str, step: &mut Step) {
    let dir = workspace.output_dir().join("mesa");
    let path = dir.join(name);
    match fs::create_dir_all(&dir).and_then(|()| fs::write(&path, text)) {
        Ok(()) => step.notes.push(format!("table: {}", path.display())),
        Err(e) => step.notes.push(format!("{}: {e}", path.display())),
    }
}

/// The frame hashes of one FFmpeg run (`-f framemd5`), and its stderr.
struct Frames {
    hashes: Vec<String>,
    stderr: String,
}

/// FFmpeg over the test source with `filters`, on the Vulkan driver of `manifest` if given.
fn ffmpeg(filters: &str, manifest: Option<&Path>) -> Result<Frames, String> {
    let mut command = Command::new("ffmpeg");
    command.args(["-hide_banner", "-nostdin", "-loglevel", "error"]);
    if let Some(manifest) = manifest {
        loader_env(&mut command, manifest);
        command.args(["-init_hw_device", "vulkan=vk:0", "-filter_hw_device", "vk"]);
    }
    command
        .args([
            "-f",
            "lavfi",
            "-i",
            FFMPEG_SOURCE,
            "-frames:v",
            FFMPEG_FRAMES,
        ])
        .args(["-vf", filters, "-f", "framemd5", "-"]);
    let out = host_command::output(&mut command).map_err(|e| e.to_string())?;
    let hashes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit(',').next())
        .map(|hash| hash.trim().to_owned())
        .collect();
    Ok(Frames {
        hashes,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The host imports libextmem counted, summed over every stats line.
fn host_imports(stderr: &str) -> Option<u64> {
    let counts: Vec<u64> = stderr
        .lines()
        .filter(|line| line.starts_with(STATS_PREFIX))
        .filter_map(|line| {
            let (_, rest) = line.rsplit_once(": ")?;
            rest.split(" host imports").next()?.trim().parse().ok()
        })
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

fn ffmpeg_round_trip(workspace: &Workspace, patched: &PatchedLavapipe) -> Step {
    let started = Instant::now();
    let mut step = Step::new("mesa: FFmpeg Vulkan hwupload/hwdownload on patched lavapipe");
    step.list_passes = true;
    let mut lines = vec![
        "| format | frames | stock lavapipe | patched lavapipe | host imports (patched) |"
            .to_owned(),
        "|---|---|---|---|---|".to_owned(),
    ];
    for format in FFMPEG_FORMATS {
        let software = ffmpeg(&format!("format={format}"), None);
        let vulkan_filters = format!("format={format},hwupload,hwdownload,format={format}");
        let ours = ffmpeg(&vulkan_filters, Some(&patched.manifest));
        let stock = ffmpeg(&vulkan_filters, Some(Path::new(STOCK_MANIFEST)));
        let name = format!("ffmpeg: {format}: {FFMPEG_FRAMES} frames through hwupload,hwdownload match the software round trip bit for bit");
        let imports_name =
            format!("ffmpeg: {format}: libextmem counted host imports (EXTMEM_STATS) > 0");
        let matches = |run: &Result<Frames, String>| match (&software, run) {
            (Ok(soft), Ok(run)) => !soft.hashes.is_empty() && soft.hashes == run.hashes,
            _ => false,
        };
        let verdict = |run: &Result<Frames, String>| {
            if matches(run) {
                "bit-exact"
            } else {
                "differs or failed"
            }
        };
        let imports = ours.as_ref().ok().and_then(|o| host_imports(&o.stderr));
        lines.push(format!(
            "| {format} | {FFMPEG_FRAMES} | {} | {} | {} |",
            verdict(&stock),
            verdict(&ours),
            imports.map_or_else(|| "none".to_owned(), |n| n.to_string())
        ));
        step.checks.push(match (&software, &ours) {
            (Err(e), _) => Check::fail(&name, format!("the software run failed: {e}")),
            (_, Err(e)) => Check::fail(&name, format!("the Vulkan run failed: {e}")),
            (Ok(_), Ok(_)) if matches(&ours) => Check::pass(&name),
            (Ok(soft), Ok(run)) => Check::fail(
                &name,
                format!(
                    "{} software frames, {} Vulkan frames; first hashes {:?} and {:?}",
                    soft.hashes.len(),
                    run.hashes.len(),
                    soft.hashes.first(),
                    run.hashes.first()
                ),
            ),
        });
        step.checks.push(match imports {
            Some(n) if n > 0 => Check::pass(format!("{imports_name}: {n}")),
            Some(n) => Check::fail(&imports_name, format!("{n} host imports")),
            None => Check::fail(&imports_name, "no stats line on stderr"),
        });
    }
    let text = lines.join("\n") + "\n";
    println!("{text}");
    save(workspace, "ffmpeg.md", &text, &mut step);
    step.elapsed = started.elapsed();
    step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_imports_are_summed_over_stats_lines() {
        let stderr = "noise\nlibextmem: device 0x10001: 12 host imports, 0 fd imports, 1 allocated, 0 fd exports\n\
                      libextmem: device 0x20001: 3 host imports, 1 fd imports, 0 allocated, 2 fd exports\n";
        assert_eq!(host_imports(stderr), Some(15));
        assert_eq!(host_imports("nothing here"), None);
    }

    #[test]
    fn the_table_puts_both_drivers_side_by_side() {
        let output = |lines: &[&str]| StepOutput {
            kind: "ktap".to_owned(),
            name: "x".to_owned(),
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
            exit_code: Some(0),
        };
        let stock = output(&["KTAP version 1", "1..2", "ok 1 a", "not ok 2 b"]);
        let patched = output(&["KTAP version 1", "1..2", "ok 1 a", "ok 2 b"]);
        let text = table(&stock, &patched);
        assert!(text.contains("| a | pass | pass |"), "{text}");
        assert!(text.contains("| b | FAIL | pass |"), "{text}");
        assert!(
            text.contains("| **passed** | **1/2** | **2/2** |"),
            "{text}"
        );
    }
}
