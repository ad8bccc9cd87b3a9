//! What to log about failures: the first of each kind per node, then at most one summary per node
//! per minute, and one line when the node answers again; never one record per call.
//!
//! The policy ([`Track`]) is plain data driven by the instants its caller passes, so it is
//! tested without clocks or sleeps. [`FailureLog`] says where the records go (a `log` target,
//! which pyo3-log turns into a Python logger name) and at what level. A node's state lives in
//! its `Health`: a success costs one atomic load ([`NodeLog::is_failing`]); only failures, and
//! the first success after them, take the mutex. Failures that name no node of the ring (no
//! membership, discovery, a node just removed) are tracked by their endpoint or node name, per
//! client, in a small per-process registry.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::Level;

use arc_swap::ArcSwap;

use crate::config::FailureLog;
use crate::error::{Error, Rounded};
use crate::sync::lock;

/// The least time between two warnings about one node (summaries, or first failures once the
/// node has been quiet this long).
const WINDOW: Duration = Duration::from_secs(60);

/// The failure kinds counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Timeout,
    Connection,
    Server,
    Refused,
    /// Failed fast because the node is marked down: the marking was logged, so these are only
    /// counted (unless nothing else was logged about the node).
    Down,
    NoNodes,
    Discovery,
}

const KINDS: usize = 7;

impl Kind {
    const ALL: [Kind; KINDS] = [
        Kind::Timeout,
        Kind::Connection,
        Kind::Server,
        Kind::Refused,
        Kind::Down,
        Kind::NoNodes,
        Kind::Discovery,
    ];

    pub(crate) fn of(error: &Error) -> Kind {
        match error {
            Error::Timeout { .. } | Error::PoolExhausted { .. } => Kind::Timeout,
            Error::Connect { .. } | Error::Io { .. } | Error::Closed { .. } | Error::Tls { .. } => {
                Kind::Connection
            }
            Error::ServerFailure { .. } | Error::Protocol { .. } | Error::UnknownCommand { .. } => {
                Kind::Server
            }
            Error::NodeDown { .. } => Kind::Down,
            Error::NoNodes => Kind::NoNodes,
            Error::Discovery { .. } | Error::NotElastiCache { .. } => Kind::Discovery,
            Error::InvalidKey { .. }
            | Error::ValueTooLarge { .. }
            | Error::TooLargeForNode { .. }
            | Error::Refused { .. }
            | Error::TlsConfig { .. }
            | Error::MetaUnsupported { .. }
            | Error::BadAddress { .. } => Kind::Refused,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn noun(self, count: u64) -> &'static str {
        let (one, many) = match self {
            Kind::Timeout => ("timeout", "timeouts"),
            Kind::Connection => ("connection failure", "connection failures"),
            Kind::Server => ("server error", "server errors"),
            Kind::Refused => ("refused request", "refused requests"),
            Kind::Down => (
                "fast failure while marked down",
                "fast failures while marked down",
            ),
            Kind::NoNodes => ("call with no nodes", "calls with no nodes"),
            Kind::Discovery => ("failed discovery", "failed discoveries"),
        };
        if count == 1 {
            one
        } else {
            many
        }
    }
}

/// The node or endpoint a failure is about, when the error names one.
pub(crate) fn subject(error: &Error) -> Option<&str> {
    match error {
        Error::Refused { node, .. }
        | Error::TooLargeForNode { node, .. }
        | Error::ServerFailure { node, .. }
        | Error::Protocol { node, .. }
        | Error::Timeout { node, .. }
        | Error::PoolExhausted { node, .. }
        | Error::Connect { node, .. }
        | Error::Io { node, .. }
        | Error::Closed { node }
        | Error::NodeDown { node, .. }
        | Error::Tls { node, .. }
        | Error::UnknownCommand { node } => Some(node),
        Error::Discovery { endpoint, .. } | Error::NotElastiCache { endpoint } => Some(endpoint),
        Error::InvalidKey { .. }
        | Error::ValueTooLarge { .. }
        | Error::NoNodes
        | Error::TlsConfig { .. }
        | Error::MetaUnsupported { .. }
        | Error::BadAddress { .. } => None,
    }
}

/// A count with thousands separators ("3,412").
struct Grouped(u64);

impl fmt::Display for Grouped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.to_string();
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                f.write_str(",")?;
            }
            write!(f, "{digit}")?;
        }
        Ok(())
    }
}

/// Failures counted by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts([u64; KINDS]);

impl Counts {
    fn add(&mut self, kind: Kind) {
        let slot = &mut self.0[kind.index()];
        *slot = slot.saturating_add(1);
    }

    fn total(&self) -> u64 {
        self.0.iter().fold(0, |sum, n| sum.saturating_add(*n))
    }

    fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

impl fmt::Display for Counts {
    /// "3,400 timeouts, 12 connection failures": the most frequent kinds first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kinds: Vec<(Kind, u64)> = Kind::ALL
            .iter()
            .map(|&kind| (kind, self.0[kind.index()]))
            .filter(|&(_, n)| n > 0)
            .collect();
        kinds.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        for (i, (kind, n)) in kinds.into_iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{} {}", Grouped(n), kind.noun(n))?;
        }
        Ok(())
    }
}

/// What a failure does to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The first of its kind: log it.
    First,
    /// Counted, to be summarised later.
    Counted,
    /// Counted, and a minute has passed since the last warning: log these counts, gathered
    /// over `over`.
    Summary { counts: Counts, over: Duration },
}

/// The logging policy for one node (or endpoint).
#[derive(Debug, Default)]
pub(crate) struct Track {
    /// When the last warning about the node was logged (a first failure, a marking or a summary).
    last_warning: Option<Instant>,
    /// Kinds whose first failure was logged since the node was last quiet for a minute.
    logged: [bool; KINDS],
    /// Whether the marking down was logged since the node was last quiet for a minute.
    marking_logged: bool,
    /// Failures counted since the last warning, not logged yet.
    pending: Counts,
    /// The failures since the last logged recovery: since when, and how many.
    streak: Option<(Instant, u64)>,
    /// Whether a warning was logged during the streak, so that its end deserves a line.
    warned: bool,
}

impl Track {
    fn quiet(&self, now: Instant) -> bool {
        self.last_warning
            .is_none_or(|at| now.saturating_duration_since(at) >= WINDOW)
    }

    fn warn(&mut self, now: Instant) {
        self.last_warning = Some(now);
        self.warned = true;
    }

    /// Takes a failure of `kind` at `now`.
    pub(crate) fn failure(&mut self, kind: Kind, now: Instant) -> Verdict {
        let quiet = self.quiet(now);
        if quiet && self.pending.is_empty() {
            // Quiet for a minute: what comes next is news again.
            self.logged = [false; KINDS];
            self.marking_logged = false;
        }
        let streak = self.streak.get_or_insert((now, 0));
        streak.1 = streak.1.saturating_add(1);
        let nothing_logged = !self.marking_logged && !self.logged.contains(&true);
        if !self.logged[kind.index()] && (kind != Kind::Down || nothing_logged) {
            self.logged[kind.index()] = true;
            self.warn(now);
            return Verdict::First;
        }
        self.pending.add(kind);
        if !quiet {
            return Verdict::Counted;
        }
        let since = self.last_warning.or(self.streak.map(|(at, _)| at));
        let over = since.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        let counts = std::mem::take(&mut self.pending);
        self.warn(now);
        Verdict::Summary { counts, over }
    }

    /// Takes the marking down of the node at `now`; returns whether to log it (once until the
    /// node has been quiet for a minute).
    pub(crate) fn marked_down(&mut self, now: Instant) -> bool {
        if self.marking_logged && !self.quiet(now) {
            return false;
        }
        self.marking_logged = true;
        self.warn(now);
        true
    }

    /// Takes a success at `now`: the failures and time to report if the node is answering
    /// again after failures that were warned about.
    pub(crate) fn success(&mut self, now: Instant) -> Option<(u64, Duration)> {
        if !self.warned {
            // Nothing was said about these failures (yet): a line about their end would be
            // noise. They still count towards the next recovery line.
            return None;
        }
        let (since, failures) = self.streak.take()?;
        self.warned = false;
        self.pending = Counts::default();
        Some((failures, now.saturating_duration_since(since)))
    }
}

/// Why a failure is being logged: sets the wording of its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    /// Raised to the caller (counted against the node).
    Raised,
    /// Turned into a miss by `ignore_exc`.
    Ignored,
    /// A failed background discovery; the last good membership stays.
    Refresh,
}

/// A record to log: its lines, worded.
#[derive(Debug)]
pub(crate) enum Line<'a> {
    First {
        subject: &'a str,
        context: Context,
        error: &'a Error,
    },
    MarkedDown {
        subject: &'a str,
        failures: u32,
        next_try: Duration,
    },
    Summary {
        subject: &'a str,
        counts: Counts,
        over: Duration,
        down_for: Option<Duration>,
    },
    Recovered {
        subject: &'a str,
        failures: u64,
        over: Duration,
    },
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Line::First {
                subject,
                context,
                error,
            } => {
                let what = match context {
                    Context::Raised => "cache failure",
                    Context::Ignored => "cache failure ignored (ignore_exc)",
                    Context::Refresh => "discovery failed, keeping the last good membership",
                };
                write!(f, "{what}: {error}; further failures of {subject} are summarised at most once a minute")
            }
            Line::MarkedDown {
                subject,
                failures,
                next_try,
            } => {
                let noun = if failures == 1 {
                    "failure"
                } else {
                    "failures in a row"
                };
                write!(
                    f,
                    "{subject} is marked down after {failures} {noun}; next try in {}",
                    Rounded(next_try)
                )
            }
            Line::Summary {
                subject,
                counts,
                over,
                down_for,
            } => {
                let total = counts.total();
                let noun = if total == 1 { "failure" } else { "failures" };
                write!(
                    f,
                    "{subject}: {} more {noun} in the last {} ({counts})",
                    Grouped(total),
                    Rounded(over)
                )?;
                if let Some(next_try) = down_for {
                    write!(
                        f,
                        "; the node is marked down, next try in {}",
                        Rounded(next_try)
                    )?;
                }
                Ok(())
            }
            Line::Recovered {
                subject,
                failures,
                over,
            } => {
                let noun = if failures == 1 { "failure" } else { "failures" };
                write!(
                    f,
                    "{subject} is answering again after {} {noun} over {}",
                    Grouped(failures),
                    Rounded(over)
                )
            }
        }
    }
}

/// The failure log of one node or endpoint: its policy state, and where its lines go.
#[derive(Debug, Default)]
pub(crate) struct NodeLog {
    subject: String,
    settings: FailureLog,
    /// Set while failures are unaccounted for by a success: the one thing a success reads.
    failing: AtomicBool,
    track: Mutex<Track>,
}

impl NodeLog {
    pub(crate) fn new(subject: &str, settings: &FailureLog) -> Self {
        NodeLog {
            subject: subject.to_owned(),
            settings: settings.clone(),
            failing: AtomicBool::new(false),
            track: Mutex::default(),
        }
    }

    /// Whether a success must be reported to [`NodeLog::success`]: one atomic load.
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// Makes the next success report to [`NodeLog::success`] even before the failure is
    /// logged (`Health` keeps its failure count consistent with this flag).
    pub(crate) fn arm(&self) {
        self.failing.store(true, Ordering::Relaxed);
    }

    fn track(&self) -> std::sync::MutexGuard<'_, Track> {
        lock(&self.track)
    }

    fn emit(&self, level: Level, line: &Line<'_>) {
        log::log!(target: &self.settings.target, level, "{line}");
    }

    /// Logs (or counts) a failure; `down_for` is how long the node is still marked down.
    pub(crate) fn failure(
        &self,
        error: &Error,
        context: Context,
        down_for: Option<Duration>,
        now: Instant,
    ) {
        let mut track = self.track();
        self.failing.store(true, Ordering::Relaxed);
        let Some(level) = self.settings.level else {
            return;
        };
        match track.failure(Kind::of(error), now) {
            Verdict::Counted => {}
            Verdict::First => {
                drop(track);
                self.emit(
                    level,
                    &Line::First {
                        subject: &self.subject,
                        context,
                        error,
                    },
                );
            }
            Verdict::Summary { counts, over } => {
                drop(track);
                self.emit(
                    level,
                    &Line::Summary {
                        subject: &self.subject,
                        counts,
                        over,
                        down_for,
                    },
                );
            }
        }
    }

    /// Logs the marking down of the node after `failures` in a row (once per minute at most).
    pub(crate) fn marked_down(&self, failures: u32, next_try: Duration, now: Instant) {
        let Some(level) = self.settings.level else {
            return;
        };
        if self.track().marked_down(now) {
            self.emit(
                level,
                &Line::MarkedDown {
                    subject: &self.subject,
                    failures,
                    next_try,
                },
            );
        }
    }

    /// Takes a success after failures: logs the recovery when the failures were warned about.
    pub(crate) fn success(&self, now: Instant) {
        let mut track = self.track();
        self.failing.store(false, Ordering::Relaxed);
        let recovered = track.success(now);
        drop(track);
        if let (Some((failures, over)), Some(_)) = (recovered, self.settings.level) {
            self.emit(
                Level::Info,
                &Line::Recovered {
                    subject: &self.subject,
                    failures,
                    over,
                },
            );
        }
    }
}

/// One client's failure logs of subjects that are not nodes of its ring (its endpoint, removed
/// nodes), in one process: a forked child starts afresh. Few and small: capped, the oldest
/// dropped first.
#[derive(Debug)]
struct Registry {
    pid: u32,
    logs: Mutex<Vec<Arc<NodeLog>>>,
}

impl Registry {
    fn new() -> Self {
        Registry {
            pid: std::process::id(),
            logs: Mutex::default(),
        }
    }
}

const UNROUTED_CAP: usize = 64;

/// The failure logs of subjects outside a client's ring, per process (see [`Registry`]).
#[derive(Debug)]
pub(crate) struct Unrouted(ArcSwap<Registry>);

impl Unrouted {
    pub(crate) fn new() -> Self {
        Unrouted(ArcSwap::from_pointee(Registry::new()))
    }

    /// Runs `f` on this process's registry. A forked child swaps in a fresh registry and
    /// never locks its parent's mutex: another thread of the parent may have held it at the
    /// moment of the fork.
    fn with<R>(&self, f: impl FnOnce(&mut Vec<Arc<NodeLog>>) -> R) -> R {
        let pid = std::process::id();
        let mut registry = self.0.load_full();
        if registry.pid != pid {
            let fresh = Arc::new(Registry::new());
            self.0.rcu(|current| {
                if current.pid == pid {
                    Arc::clone(current)
                } else {
                    Arc::clone(&fresh)
                }
            });
            registry = self.0.load_full();
        }
        let mut logs = lock(&registry.logs);
        f(&mut logs)
    }

    /// The failure log of `subject`, if it has one.
    pub(crate) fn find(&self, subject: &str) -> Option<Arc<NodeLog>> {
        self.with(|logs| logs.iter().find(|log| log.subject == subject).cloned())
    }

    /// The failure log of `subject`, made if there is none yet.
    pub(crate) fn log(&self, subject: &str, settings: &FailureLog) -> Arc<NodeLog> {
        self.with(|logs| {
            if let Some(log) = logs.iter().find(|log| log.subject == subject) {
                return Arc::clone(log);
            }
            if logs.len() >= UNROUTED_CAP {
                logs.remove(0);
            }
            let log = Arc::new(NodeLog::new(subject, settings));
            logs.push(Arc::clone(&log));
            log
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout() -> Error {
        Error::Timeout {
            node: "10.0.0.5:11211".to_owned(),
            timeout: Duration::from_millis(999),
        }
    }

    fn refused() -> Error {
        Error::Connect {
            node: "10.0.0.5:11211".to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        }
    }

    fn down() -> Error {
        Error::NodeDown {
            node: "10.0.0.5:11211".to_owned(),
            retry_in: Duration::from_millis(59_812),
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn durations_are_rounded_to_ms_below_a_second_and_tenths_above() {
        assert_eq!(
            Rounded(Duration::from_micros(999_412)).to_string(),
            "999 ms"
        );
        assert_eq!(Rounded(Duration::from_micros(999_612)).to_string(), "1.0 s");
        assert_eq!(Rounded(Duration::from_millis(250)).to_string(), "250 ms");
        assert_eq!(Rounded(Duration::from_secs(1)).to_string(), "1.0 s");
        assert_eq!(Rounded(Duration::from_millis(59_812)).to_string(), "59.8 s");
        assert_eq!(Rounded(Duration::ZERO).to_string(), "0 ms");
    }

    #[test]
    fn counts_are_grouped_by_thousands() {
        assert_eq!(Grouped(0).to_string(), "0");
        assert_eq!(Grouped(999).to_string(), "999");
        assert_eq!(Grouped(3_412).to_string(), "3,412");
        assert_eq!(Grouped(1_234_567).to_string(), "1,234,567");
    }

    #[test]
    fn the_first_failure_logs_and_the_next_ones_are_counted() {
        let t0 = Instant::now();
        let mut track = Track::default();
        assert_eq!(track.failure(Kind::Timeout, t0), Verdict::First);
        for i in 1..=1000 {
            let at = t0 + Duration::from_millis(i * 50);
            assert_eq!(track.failure(Kind::Timeout, at), Verdict::Counted, "{i}");
        }
    }

    #[test]
    fn one_summary_per_minute_with_counts_by_kind() {
        let t0 = Instant::now();
        let mut track = Track::default();
        assert_eq!(track.failure(Kind::Timeout, t0), Verdict::First);
        assert_eq!(
            track.failure(Kind::Connection, t0 + Duration::from_millis(100)),
            Verdict::First,
            "each kind's first failure is logged"
        );
        let mut summaries = Vec::new();
        // 10 failures a second for three minutes.
        for tick in 2..1800 {
            let kind = if tick % 100 == 0 {
                Kind::Connection
            } else {
                Kind::Timeout
            };
            let at = t0 + Duration::from_millis(tick * 100);
            if let Verdict::Summary { counts, over } = track.failure(kind, at) {
                summaries.push((tick, counts, over));
            }
        }
        let ticks: Vec<u64> = summaries.iter().map(|s| s.0).collect();
        assert_eq!(
            ticks,
            vec![601, 1201],
            "one summary a minute after the last warning"
        );
        let (_, counts, over) = summaries[0];
        assert_eq!(over, secs(60.0));
        assert_eq!(counts.total(), 600);
        assert_eq!(counts.to_string(), "594 timeouts, 6 connection failures");
        let (_, counts, _) = summaries[1];
        assert_eq!(counts.total(), 600);
    }

    #[test]
    fn a_summary_reads_as_a_sentence() {
        let mut counts = Counts::default();
        for _ in 0..3_400 {
            counts.add(Kind::Timeout);
        }
        for _ in 0..12 {
            counts.add(Kind::Connection);
        }
        let line = Line::Summary {
            subject: "10.0.0.5:11211",
            counts,
            over: secs(60.0),
            down_for: Some(secs(41.96)),
        };
        assert_eq!(
            line.to_string(),
            "10.0.0.5:11211: 3,412 more failures in the last 60.0 s (3,400 timeouts, \
             12 connection failures); the node is marked down, next try in 42.0 s"
        );
    }

    /// Records logged by this test binary, with their target and level.
    static CAPTURED: Mutex<Vec<(String, Level, String)>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }

        fn log(&self, record: &log::Record<'_>) {
            let entry = (
                record.target().to_owned(),
                record.level(),
                record.args().to_string(),
            );
            lock(&CAPTURED).push(entry);
        }

        fn flush(&self) {}
    }

    /// The records logged so far to `target` (each test uses a target of its own).
    fn captured(target: &str) -> Vec<(Level, String)> {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            if log::set_logger(&Capture).is_ok() {
                log::set_max_level(log::LevelFilter::Trace);
            }
        });
        lock(&CAPTURED)
            .iter()
            .filter(|(t, _, _)| t == target)
            .map(|(_, level, message)| (*level, message.clone()))
            .collect()
    }

    fn settings(target: &str, level: Option<Level>) -> FailureLog {
        FailureLog {
            target: target.to_owned(),
            level,
        }
    }

    #[test]
    fn nodes_are_tracked_apart_and_logged_to_the_client_target() {
        let target = "test::apart";
        captured(target);
        let t0 = Instant::now();
        let a = NodeLog::new("10.0.0.5:11211", &settings(target, Some(Level::Warn)));
        let b = NodeLog::new("10.0.0.6:11211", &settings(target, Some(Level::Warn)));
        for i in 0..500 {
            let at = t0 + Duration::from_millis(i);
            for log in [&a, &b] {
                let error = Error::Timeout {
                    node: log.subject.clone(),
                    timeout: Duration::from_secs(1),
                };
                log.failure(&error, Context::Ignored, None, at);
            }
        }
        a.success(t0 + secs(1.0));
        let records = captured(target);
        assert_eq!(records.len(), 3, "{records:?}");
        assert_eq!(records[0].0, Level::Warn);
        assert!(records[0]
            .1
            .contains("10.0.0.5:11211 did not answer within 1.0 s"));
        assert!(records[1]
            .1
            .contains("10.0.0.6:11211 did not answer within 1.0 s"));
        assert_eq!(
            records[2],
            (
                Level::Info,
                "10.0.0.5:11211 is answering again after 500 failures over 1.0 s".to_owned()
            )
        );
    }

    #[test]
    fn the_level_setting_applies_and_none_is_silent() {
        let t0 = Instant::now();
        for (target, level) in [("test::error", Some(Level::Error)), ("test::silent", None)] {
            captured(target);
            let log = NodeLog::new("10.0.0.5:11211", &settings(target, level));
            log.failure(&refused(), Context::Raised, None, t0);
            log.marked_down(2, secs(60.0), t0);
            log.success(t0 + secs(2.0));
        }
        let levels: Vec<Level> = captured("test::error").iter().map(|r| r.0).collect();
        assert_eq!(levels, vec![Level::Error, Level::Error, Level::Info]);
        assert_eq!(captured("test::silent"), vec![]);
    }

    #[test]
    fn the_marking_down_is_logged_once_and_fast_failures_only_counted() {
        let t0 = Instant::now();
        let mut track = Track::default();
        assert_eq!(track.failure(Kind::Connection, t0), Verdict::First);
        assert_eq!(track.failure(Kind::Down, t0 + secs(0.1)), Verdict::Counted);
        assert!(track.marked_down(t0 + secs(1.0)));
        assert_eq!(track.failure(Kind::Down, t0 + secs(1.1)), Verdict::Counted);
        assert!(
            !track.marked_down(t0 + secs(30.0)),
            "marked down again within the minute: not logged again"
        );
        let line = Line::MarkedDown {
            subject: "10.0.0.5:11211",
            failures: 2,
            next_try: secs(0.99961),
        };
        assert_eq!(
            line.to_string(),
            "10.0.0.5:11211 is marked down after 2 failures in a row; next try in 1.0 s"
        );
    }

    #[test]
    fn a_fast_failure_is_logged_when_nothing_else_was() {
        let mut track = Track::default();
        assert_eq!(track.failure(Kind::Down, Instant::now()), Verdict::First);
        let error = down();
        let line = Line::First {
            subject: "10.0.0.5:11211",
            context: Context::Ignored,
            error: &error,
        };
        assert_eq!(
            line.to_string(),
            "cache failure ignored (ignore_exc): 10.0.0.5:11211 is marked down; next try in \
             59.8 s; further failures of 10.0.0.5:11211 are summarised at most once a minute"
        );
    }

    #[test]
    fn recovery_is_one_line_with_the_failures_and_their_span() {
        let t0 = Instant::now();
        let mut track = Track::default();
        assert_eq!(track.success(t0), None, "no failures, nothing to say");
        track.failure(Kind::Timeout, t0);
        for i in 1..3_413 {
            track.failure(Kind::Down, t0 + Duration::from_millis(i));
        }
        assert_eq!(track.success(t0 + secs(12.4)), Some((3_413, secs(12.4))));
        assert_eq!(track.success(t0 + secs(12.5)), None, "only once");
        let line = Line::Recovered {
            subject: "10.0.0.5:11211",
            failures: 3_413,
            over: secs(12.4),
        };
        assert_eq!(
            line.to_string(),
            "10.0.0.5:11211 is answering again after 3,413 failures over 12.4 s"
        );
    }

    #[test]
    fn a_flapping_node_logs_at_most_a_warning_and_a_recovery_a_minute() {
        let t0 = Instant::now();
        let mut track = Track::default();
        let mut lines = 0;
        // One timeout and one success every second, for ten minutes.
        for s in 0..600 {
            let at = t0 + secs(f64::from(s));
            if track.failure(Kind::Timeout, at) != Verdict::Counted {
                lines += 1;
            }
            if track.success(at + secs(0.5)).is_some() {
                lines += 1;
            }
        }
        assert!(lines <= 2 * 10 + 2, "{lines} lines in ten minutes");
        assert!(
            lines >= 10,
            "the failures are still reported: {lines} lines"
        );
    }

    #[test]
    fn after_a_quiet_minute_a_failure_is_news_again() {
        let t0 = Instant::now();
        let mut track = Track::default();
        assert_eq!(track.failure(Kind::Timeout, t0), Verdict::First);
        assert!(track.success(t0 + secs(1.0)).is_some());
        assert_eq!(
            track.failure(Kind::Timeout, t0 + secs(2.0)),
            Verdict::Counted
        );
        assert!(
            track.success(t0 + secs(3.0)).is_none(),
            "nothing warned since"
        );
        // The pending count is summarised at the next failure after the minute.
        assert!(matches!(
            track.failure(Kind::Timeout, t0 + secs(90.0)),
            Verdict::Summary { over, .. } if over == secs(90.0)
        ));
        assert!(track.success(t0 + secs(91.0)).is_some());
        assert_eq!(
            track.failure(Kind::Timeout, t0 + secs(200.0)),
            Verdict::First
        );
    }

    #[test]
    fn first_lines_say_what_happened_to_the_call() {
        let error = timeout();
        let line = |context| {
            Line::First {
                subject: "10.0.0.5:11211",
                context,
                error: &error,
            }
            .to_string()
        };
        assert_eq!(
            line(Context::Raised),
            "cache failure: 10.0.0.5:11211 did not answer within 999 ms; further failures of \
             10.0.0.5:11211 are summarised at most once a minute"
        );
        assert!(line(Context::Ignored).starts_with("cache failure ignored (ignore_exc): "));
        assert!(line(Context::Refresh)
            .starts_with("discovery failed, keeping the last good membership: "));
        assert_eq!(Kind::of(&refused()), Kind::Connection);
        assert_eq!(Kind::of(&down()), Kind::Down);
    }

    #[test]
    fn a_silent_log_still_tracks_successes_cheaply() {
        let log = NodeLog::new(
            "a:1",
            &FailureLog {
                level: None,
                ..FailureLog::default()
            },
        );
        assert!(!log.is_failing());
        log.failure(&timeout(), Context::Raised, None, Instant::now());
        assert!(log.is_failing(), "the success after it must be seen");
        log.success(Instant::now());
        assert!(!log.is_failing());
    }
}
