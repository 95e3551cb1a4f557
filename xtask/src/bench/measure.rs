//! Timing: commands run and timed whole, their JSON events read as they arrive, the CPU time
//! of an exited process, and the medians and paired ratios the rows are judged by.
//!
//! Starts processes and reads `/proc`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Runs a command in `dir`, returning its wall time and stdout; fails on a non-zero exit.
pub(crate) fn timed(
    dir: &Path,
    program: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
) -> Result<(Duration, String), String> {
    let start = Instant::now();
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .map_err(|e| format!("could not start {}: {e}", program.display()))?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{} {} failed in {}:\n{}",
            program.display(),
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((elapsed, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// A finished run of [`timed_events`].
pub(crate) struct Timed {
    pub(crate) time: Duration,
    /// The JSON events printed on stdout, each with the time it arrived.
    pub(crate) events: Vec<(Duration, Value)>,
    /// The CPU time (user + system) of the process itself, not of its children (read from
    /// `/proc` once it has exited, before it is reaped).
    pub(crate) own_cpu: Option<Duration>,
}

impl Timed {
    /// The first event of `reason`, with the time it arrived.
    pub(crate) fn at(&self, reason: &str) -> Option<&(Duration, Value)> {
        self.events.iter().find(|(_, e)| e["reason"] == reason)
    }

    /// The wall time of an imgbuild run outside cargo's: cargo runs from the `isolation`
    /// event (the sandbox is chosen just before it starts) to the `compiled` event; the rest
    /// is imgbuild's own time. `None` when cargo did not run.
    pub(crate) fn outside_cargo(&self) -> Option<Duration> {
        match (self.at("isolation"), self.at("compiled")) {
            (Some((from, _)), Some((to, _))) => {
                Some(self.time.saturating_sub(to.saturating_sub(*from)))
            }
            _ => None,
        }
    }
}

/// Runs a command in `dir` like [`timed`], reading its stdout's JSON events as they come.
pub(crate) fn timed_events(
    dir: &Path,
    program: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
) -> Result<Timed, String> {
    use std::io::BufRead;
    let stderr_path =
        std::env::temp_dir().join(format!("imgbuild-bench-stderr-{}", std::process::id()));
    let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env_remove("SOURCE_DATE_EPOCH")
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("could not start {}: {e}", program.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let events = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .map(|e| (start.elapsed(), e))
        .collect();
    let own_cpu = exited_cpu(child.id());
    let status = child.wait().map_err(|e| e.to_string())?;
    let time = start.elapsed();
    let errors = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let _ = std::fs::remove_file(&stderr_path);
    if !status.success() {
        return Err(format!(
            "{} {} failed in {}:\n{errors}",
            program.display(),
            args.join(" "),
            dir.display()
        ));
    }
    Ok(Timed {
        time,
        events,
        own_cpu,
    })
}

/// The CPU time of process `pid` once it has exited (a zombie's `/proc/PID/stat` keeps its
/// final user and system times, in clock ticks of 1/100 s); `None` if it is not seen exit
/// within two seconds or the file cannot be read.
fn exited_cpu(pid: u32) -> Option<Duration> {
    let path = format!("/proc/{pid}/stat");
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(&path).ok()?;
        // The fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
            // utime and stime are the line's fields 14 and 15: the 12th and 13th after the name.
            return Some(Duration::from_millis((ticks(11)? + ticks(12)?) * 10));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// `d` as `1.23 s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The median of the ratios `imgbuild / cargo` of runs taken in pairs, one right after the
/// other: the machine's speed drifts by more than the targets between pairs, and a pair's
/// ratio cancels most of that drift where a ratio of medians does not.
pub(crate) fn paired_ratio(imgbuild: &[Duration], cargo: &[Duration]) -> f64 {
    let mut ratios = pair_ratios(imgbuild, cargo);
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

/// Each pair's ratio `imgbuild / cargo`, in run order.
fn pair_ratios(imgbuild: &[Duration], cargo: &[Duration]) -> Vec<f64> {
    imgbuild
        .iter()
        .zip(cargo)
        .map(|(i, c)| i.as_secs_f64() / c.as_secs_f64())
        .collect()
}

/// The pairs' ratios as `1.02/0.97x`, for a row's note.
pub(crate) fn ratios(imgbuild: &[Duration], cargo: &[Duration]) -> String {
    let list: Vec<String> = pair_ratios(imgbuild, cargo)
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect();
    format!("{}x", list.join("/"))
}

/// The median of `times`.
pub(crate) fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// `times` as `1.23/4.56 s`, for a row's note.
pub(crate) fn seconds(times: &[Duration]) -> String {
    let list: Vec<String> = times
        .iter()
        .map(|t| format!("{:.2}", t.as_secs_f64()))
        .collect();
    format!("{} s", list.join("/"))
}
