//! The plan compiled from a run's source, kept beside the copy of that
//! source (`STATE/sources/RUN.plan`), so that `resume`, `retry` and
//! `status` read the typed plan instead of parsing and compiling the
//! runbook again: for a runbook of 5,000 steps compiling is about 45 ms on
//! the project's machine, most of a resume.
//!
//! It is a cache, never the record: the journal's source is. A kept plan is
//! used only when this very executable wrote it (its version and its file's
//! identity: a rebuilt or upgraded runbook compiles again, as the form of a
//! plan may have changed) and for exactly the source the journal recorded
//! (a kept plan carries that source, compared byte for byte). A plan file
//! that is missing, torn, damaged or another build's is compiled again and
//! kept anew. Written whole (a new private file, renamed), not synced: a
//! power loss loses only a cache.

use crate::compile::Plan;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The longest plan file read: far above the plan of the largest runbook
/// (2 MB of source).
const LIMIT: u64 = 64 << 20;

/// What a plan file starts with; then the CRC-32 of the rest (big-endian),
/// so that a damaged file is compiled again, never read as another plan;
/// then serde's postcard form, which reads back a plan several times
/// faster than JSON (and is a fifth of its size). The form changes with
/// the build, which is checked next.
const MAGIC: &[u8] = b"runbook kept plan\n";

/// The directory the plans are kept in, beside the copies of the sources.
fn dir(state: &Path) -> PathBuf {
    state.join("sources")
}

fn name(run: u64) -> String {
    format!("{run}.plan")
}

/// Where run `run`'s plan is kept.
fn path(state: &Path, run: u64) -> PathBuf {
    dir(state).join(name(run))
}

#[derive(serde::Serialize)]
struct Keeping<'a> {
    build: &'a str,
    source: &'a str,
    plan: &'a Plan,
}

#[derive(serde::Deserialize)]
struct Kept {
    build: String,
    source: String,
    plan: Plan,
}

/// This executable: its version and its file (device, inode, size and
/// modification time). `None` where /proc cannot say, and nothing is kept.
fn this_build() -> Option<&'static str> {
    static BUILD: OnceLock<Option<String>> = OnceLock::new();
    BUILD
        .get_or_init(|| {
            use std::os::unix::fs::MetadataExt;
            let exe = std::fs::metadata("/proc/self/exe").ok()?;
            Some(format!(
                "runbook {} {}:{} {} {}.{:09}",
                env!("CARGO_PKG_VERSION"),
                exe.dev(),
                exe.ino(),
                exe.len(),
                exe.mtime(),
                exe.mtime_nsec()
            ))
        })
        .as_deref()
}

/// Keeps `plan`, compiled from `source`, for run `run`, on a thread of its
/// own: whoever asked goes on at once. A process that ends first leaves
/// nothing but a temporary file, swept by the next writer.
pub fn keep(state: &Path, run: u64, source: &str, plan: &Plan) {
    let (state, source, plan) = (state.to_path_buf(), source.to_string(), plan.clone());
    let _ = std::thread::Builder::new()
        .name("keep-plan".into())
        .spawn(move || write(&state, run, &source, &plan));
}

/// Keeps `plan` now; whether it was written.
pub fn write(state: &Path, run: u64, source: &str, plan: &Plan) -> bool {
    let Some(build) = this_build() else {
        return false;
    };
    encode(build, source, plan)
        .and_then(|body| crate::store::private::write_view(&dir(state), &name(run), &body))
        .is_ok()
}

fn encode(build: &str, source: &str, plan: &Plan) -> std::io::Result<Vec<u8>> {
    let keeping = Keeping {
        build,
        source,
        plan,
    };
    let payload = postcard::to_stdvec(&keeping).map_err(std::io::Error::other)?;
    let mut body = MAGIC.to_vec();
    body.extend_from_slice(&crc32fast::hash(&payload).to_be_bytes());
    body.extend_from_slice(&payload);
    Ok(body)
}

/// Run `run`'s kept plan, if this executable kept it for exactly `source`.
pub fn read(state: &Path, run: u64, source: &str) -> Option<Plan> {
    let build = this_build()?;
    let bytes = crate::store::private::read(&path(state, run), LIMIT).ok()?;
    let (crc, payload) = bytes.strip_prefix(MAGIC)?.split_first_chunk::<4>()?;
    if crc32fast::hash(payload) != u32::from_be_bytes(*crc) {
        return None;
    }
    let kept: Kept = postcard::from_bytes(payload).ok()?;
    (kept.build == build && kept.source == source).then_some(kept.plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a plan means, in an order that does not depend on hashing.
    fn meaning(plan: &Plan) -> String {
        let deps: Vec<_> = plan
            .steps
            .iter()
            .map(|s| {
                (
                    plan.dependencies(s.id).to_vec(),
                    plan.step(&s.name).map(|f| f.id),
                )
            })
            .collect();
        let stages = (
            plan.stages(crate::compile::Phase::Main),
            plan.stages(crate::compile::Phase::OnFailure),
        );
        format!(
            "{:?}",
            (
                &plan.name,
                &plan.settings,
                &plan.params,
                &plan.lets,
                &plan.steps,
                plan.graph
                    .raw_edges()
                    .iter()
                    .map(|e| (e.source(), e.target(), e.weight))
                    .collect::<Vec<_>>(),
                deps,
                stages
            )
        )
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("runbook-kept-plan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        crate::store::private::make_dir(&dir).expect("a directory");
        dir
    }

    #[test]
    fn every_workflow_reads_back_as_the_plan_it_was() {
        let state = scratch("workflows");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("workflows") {
            let path = entry.expect("an entry").path();
            if path.extension().and_then(|e| e.to_str()) != Some("runbook") {
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("readable");
            let plan = crate::compile::check(&source).expect("checks clean");
            assert!(write(&state, 1, &source, &plan), "{}", path.display());
            let back = read(&state, 1, &source).expect("read back");
            assert_eq!(meaning(&back), meaning(&plan), "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 10, "{seen} workflows");
        let _ = std::fs::remove_dir_all(&state);
    }

    #[test]
    fn a_plan_for_another_source_or_build_or_damaged_is_not_used() {
        let state = scratch("refused");
        let source = "runbook r {\n  wait a { duration 1s }\n}\n";
        let plan = crate::compile::check(source).expect("checks clean");
        assert!(write(&state, 7, source, &plan));
        assert!(read(&state, 7, source).is_some());
        assert!(read(&state, 8, source).is_none(), "another run's");
        let edited = source.replace("1s", "2s");
        assert!(read(&state, 7, &edited).is_none(), "another source's");

        let file = path(&state, 7);
        let kept = std::fs::read(&file).expect("kept");
        let build = this_build().expect("a build");
        let rebuilt = format!("{build}-rebuilt");
        std::fs::write(&file, encode(&rebuilt, source, &plan).expect("encodes")).expect("writes");
        assert!(read(&state, 7, source).is_none(), "another build's");

        let damaged: [&[u8]; 4] = [
            &kept[..kept.len() / 2],
            &kept[MAGIC.len()..],
            b"",
            b"runbook kept plan\n\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        ];
        for bytes in damaged {
            std::fs::write(&file, bytes).expect("writes");
            assert!(read(&state, 7, source).is_none(), "{bytes:?}");
        }
        // One bit anywhere after the name: refused by its checksum, even
        // where the rest would read as a plan (a duration of 3s, say).
        for at in MAGIC.len() + 4..kept.len() {
            let mut flipped = kept.clone();
            flipped[at] ^= 0x02;
            std::fs::write(&file, &flipped).expect("writes");
            assert!(read(&state, 7, source).is_none(), "bit 1 of byte {at}");
        }
        std::fs::write(&file, &kept).expect("writes");
        assert!(read(&state, 7, source).is_some(), "as kept");
        let _ = std::fs::remove_dir_all(&state);
    }

    #[test]
    fn a_kept_plan_whose_step_numbers_name_no_step_is_refused_not_indexed() {
        use crate::compile::{Edge, StepId};
        let state = scratch("numbers");
        let source = "runbook r {\n  wait a { duration 1s }\n  wait b after a { duration 1s }\n}\n";
        let plan = crate::compile::check(source).expect("checks clean");
        let build = this_build().expect("a build");
        crate::store::private::make_dir(&state.join("sources")).expect("a directory");
        let kept_as = |plan: &Plan| {
            std::fs::write(
                path(&state, 1),
                encode(build, source, plan).expect("encodes"),
            )
            .expect("writes");
            read(&state, 1, source)
        };
        assert!(kept_as(&plan).is_some());
        // An edge to a node that is no step.
        let mut graph = plan.graph.clone();
        let extra = graph.add_node(StepId(2));
        graph.add_edge(StepId(0).node(), extra, Edge::Succeeded);
        let edged = Plan::new(
            plan.name.clone(),
            plan.settings.clone(),
            plan.params.clone(),
            plan.lets.clone(),
            plan.steps.clone(),
            graph,
        );
        assert!(kept_as(&edged).is_none());
        // A step numbered as another, or undoing one that is not there.
        let mut renumbered = plan.clone();
        renumbered.steps[1].id = StepId(5);
        assert!(kept_as(&renumbered).is_none());
        let mut undoing = plan.clone();
        undoing.steps[1].undoes.push(StepId(9));
        assert!(kept_as(&undoing).is_none());
        let _ = std::fs::remove_dir_all(&state);
    }
}
