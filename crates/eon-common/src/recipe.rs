//! Recipes: how to run a user's front end.
//!
//! A recipe is a TOML file that tells eon how to start one front end (in any
//! language), how to tell that an instance is ready and alive, how to stop
//! it gracefully, what load each instance should carry, how far to scale,
//! and which requests the ingress routes to it. The agent starts instances
//! from it; the balancer scales by it; the ingress routes by it.
//!
//! ```toml
//! name = "guestbook"
//! command = "python3 app.py"          # $PORT, $EON_PG_URL, $EON_REST_URL are set
//! dir = "."                           # relative to the recipe file
//! env = { GREETING = "hi" }
//!
//! [stop]
//! signal = "SIGTERM"                  # then SIGKILL after `timeout`
//! timeout = "10s"
//! drain = "1s"                        # out of the routing table this long before the signal
//!
//! [ready]                             # one of http = "/path", tcp = true, command = "…"
//! http = "/healthz"
//! interval = "1s"
//! grace = "30s"                       # time allowed to become ready after start
//!
//! [live]
//! http = "/healthz"
//! interval = "5s"
//! failures = 3                        # consecutive failures before a restart
//!
//! [load]
//! signal = "inflight"                 # or "prometheus" with metric = "name"
//! target = 10                         # per instance
//!
//! [scale]
//! min = 0                             # 0: scale to zero after `idle`
//! max = 5
//! idle = "5m"
//! up_window = "0s"                    # stabilization windows (Kubernetes HPA)
//! down_window = "5m"
//! up_step = 4                         # at most this many instances added per decision
//! down_step = 1
//!
//! [route]                             # prefix = "/…" or host = "…" (default prefix "/<name>")
//! prefix = "/guestbook"
//! ```
//!
//! [`Recipe::parse`] refuses a bad recipe with one line that names the field
//! at fault: an unknown field, a bad duration, `min` above `max`, a missing
//! command.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A parsed, checked recipe.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub name: String,
    /// Run by `sh -c`.
    #[serde(default)]
    pub command: String,
    /// Working directory, relative to the recipe file.
    #[serde(default = "default_dir")]
    pub dir: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub stop: Stop,
    #[serde(default = "Check::default_ready")]
    pub ready: Check,
    #[serde(default)]
    pub live: Option<Check>,
    #[serde(default)]
    pub load: Load,
    #[serde(default)]
    pub scale: Scale,
    #[serde(default)]
    pub route: Route,
}

fn default_dir() -> String {
    ".".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    #[serde(default = "Stop::default_signal")]
    pub signal: String,
    #[serde(default = "Stop::default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    #[serde(default = "Stop::default_drain", deserialize_with = "duration")]
    pub drain: Duration,
}

impl Stop {
    fn default_signal() -> String {
        "SIGTERM".into()
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_drain() -> Duration {
        Duration::from_secs(1)
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            signal: Stop::default_signal(),
            timeout: Stop::default_timeout(),
            drain: Stop::default_drain(),
        }
    }
}

/// A readiness or liveness check: exactly one of `http`, `tcp`, `command`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// GET this path on the instance's port; 2xx passes.
    #[serde(default)]
    pub http: Option<String>,
    /// Connect to the instance's port.
    #[serde(default)]
    pub tcp: bool,
    /// Run this (`sh -c`, with the instance's environment); exit 0 passes.
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default = "Check::default_interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// Readiness: how long a new instance may take to become ready.
    #[serde(default = "Check::default_grace", deserialize_with = "duration")]
    pub grace: Duration,
    /// Liveness: consecutive failures before the instance is restarted.
    #[serde(default = "Check::default_failures")]
    pub failures: u32,
}

impl Check {
    fn default_interval() -> Duration {
        Duration::from_secs(1)
    }
    fn default_grace() -> Duration {
        Duration::from_secs(30)
    }
    fn default_failures() -> u32 {
        3
    }
    /// Without a `[ready]` table: the port accepts connections.
    fn default_ready() -> Check {
        Check {
            http: None,
            tcp: true,
            command: None,
            interval: Check::default_interval(),
            grace: Check::default_grace(),
            failures: Check::default_failures(),
        }
    }
}

/// What load means for this front end, and how much an instance should
/// carry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    #[serde(default)]
    pub signal: LoadSignal,
    /// The Prometheus metric (a gauge) scraped from the instance's
    /// `/metrics`, when `signal = "prometheus"`.
    #[serde(default)]
    pub metric: Option<String>,
    /// Target load per instance.
    #[serde(default = "Load::default_target")]
    pub target: f64,
}

impl Load {
    fn default_target() -> f64 {
        10.0
    }
}

impl Default for Load {
    fn default() -> Self {
        Load {
            signal: LoadSignal::default(),
            metric: None,
            target: Load::default_target(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadSignal {
    /// Requests in flight through eon's ingress.
    #[default]
    Inflight,
    /// A metric the instance exposes.
    Prometheus,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scale {
    #[serde(default = "Scale::default_min")]
    pub min: u32,
    #[serde(default = "Scale::default_max")]
    pub max: u32,
    /// With `min = 0`: no requests for this long scales to zero.
    #[serde(default = "Scale::default_idle", deserialize_with = "duration")]
    pub idle: Duration,
    #[serde(default, deserialize_with = "duration")]
    pub up_window: Duration,
    #[serde(default = "Scale::default_down_window", deserialize_with = "duration")]
    pub down_window: Duration,
    #[serde(default = "Scale::default_up_step")]
    pub up_step: u32,
    #[serde(default = "Scale::default_down_step")]
    pub down_step: u32,
}

impl Scale {
    fn default_min() -> u32 {
        1
    }
    fn default_max() -> u32 {
        4
    }
    fn default_idle() -> Duration {
        Duration::from_secs(300)
    }
    fn default_down_window() -> Duration {
        Duration::from_secs(300)
    }
    fn default_up_step() -> u32 {
        4
    }
    fn default_down_step() -> u32 {
        1
    }
}

impl Default for Scale {
    fn default() -> Self {
        Scale {
            min: Scale::default_min(),
            max: Scale::default_max(),
            idle: Scale::default_idle(),
            up_window: Duration::ZERO,
            down_window: Scale::default_down_window(),
            up_step: Scale::default_up_step(),
            down_step: Scale::default_down_step(),
        }
    }
}

/// Which requests of the ingress go to this front end.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
}

impl Route {
    /// `/prefix` or `host example.com` (a checked recipe has exactly one).
    pub fn describe(&self) -> String {
        match (&self.host, &self.prefix) {
            (Some(h), _) => format!("host {h}"),
            (None, Some(p)) => p.clone(),
            (None, None) => "-".into(),
        }
    }
}

/// Durations as people write them: "500ms", "10s", "5m", "1h 30m".
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "bad duration {text:?} ({e}); write it like \"500ms\", \"10s\" or \"5m\""
        ))
    })
}

/// Signals a recipe may name for stopping.
const SIGNALS: &[&str] = &[
    "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGKILL",
];

impl Recipe {
    /// Parse and check a recipe. The error is one line naming the field.
    pub fn parse(text: &str) -> Result<Recipe, String> {
        let mut r: Recipe = toml::from_str(text).map_err(|e| {
            // toml's message spans several lines (with the offending source
            // line); keep its first line and the key path it names.
            let msg = e.message().trim().to_string();
            match e.span() {
                Some(span) => format!("{msg} (at byte {})", span.start),
                None => msg,
            }
        })?;
        r.check()?;
        if r.route.prefix.is_none() && r.route.host.is_none() {
            r.route.prefix = Some(format!("/{}", r.name));
        }
        r.stop.signal = r.stop.signal.to_ascii_uppercase();
        if !r.stop.signal.starts_with("SIG") {
            r.stop.signal = format!("SIG{}", r.stop.signal);
        }
        Ok(r)
    }

    fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 40
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && self.name.starts_with(|c: char| c.is_ascii_lowercase());
        if !name_ok {
            return Err(format!(
                "name: {:?} is not a front end name (lowercase letters, digits and '-', starting with a letter, at most 40)",
                self.name
            ));
        }
        if self.command.trim().is_empty() {
            return Err(
                "command: missing (the command that starts an instance; its port is in $PORT)"
                    .into(),
            );
        }
        let signal = self.stop.signal.to_ascii_uppercase();
        let signal = if signal.starts_with("SIG") {
            signal
        } else {
            format!("SIG{signal}")
        };
        if !SIGNALS.contains(&signal.as_str()) {
            return Err(format!(
                "stop.signal: unknown signal {:?} (one of {})",
                self.stop.signal,
                SIGNALS.join(", ")
            ));
        }
        self.ready.check("ready")?;
        if let Some(live) = &self.live {
            live.check("live")?;
        }
        if !(self.load.target.is_finite() && self.load.target > 0.0) {
            return Err(format!(
                "load.target: must be a positive number, not {}",
                self.load.target
            ));
        }
        match (self.load.signal, &self.load.metric) {
            (LoadSignal::Prometheus, None) => {
                return Err("load.metric: missing (the Prometheus metric to scale on, with signal = \"prometheus\")".into());
            }
            (LoadSignal::Inflight, Some(_)) => {
                return Err("load.metric: only used with signal = \"prometheus\"".into());
            }
            _ => {}
        }
        let s = &self.scale;
        if s.max == 0 {
            return Err("scale.max: must be at least 1".into());
        }
        if s.min > s.max {
            return Err(format!(
                "scale.min: {} is above scale.max ({})",
                s.min, s.max
            ));
        }
        if s.up_step == 0 || s.down_step == 0 {
            return Err(format!(
                "scale.{}: must be at least 1",
                if s.up_step == 0 {
                    "up_step"
                } else {
                    "down_step"
                }
            ));
        }
        match (&self.route.prefix, &self.route.host) {
            (Some(_), Some(_)) => return Err("route: give prefix or host, not both".into()),
            (Some(p), None) if !p.starts_with('/') => {
                return Err(format!("route.prefix: {p:?} must start with '/'"));
            }
            (None, Some(h)) if h.is_empty() || h.contains('/') => {
                return Err(format!("route.host: {h:?} is not a host name"));
            }
            _ => {}
        }
        Ok(())
    }
}

impl Check {
    fn check(&self, table: &str) -> Result<(), String> {
        let kinds = self.http.is_some() as u32 + self.tcp as u32 + self.command.is_some() as u32;
        if kinds != 1 {
            return Err(format!(
                "{table}: give exactly one of http = \"/path\", tcp = true, command = \"…\""
            ));
        }
        if let Some(path) = &self.http {
            if !path.starts_with('/') {
                return Err(format!(
                    "{table}.http: {path:?} must be a path starting with '/'"
                ));
            }
        }
        if self.interval.is_zero() {
            return Err(format!("{table}.interval: must be above zero"));
        }
        if self.failures == 0 {
            return Err(format!("{table}.failures: must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
        name = "guestbook"
        command = "python3 app.py"
        env = { GREETING = "hi" }
        [stop]
        signal = "term"
        timeout = "5s"
        drain = "500ms"
        [ready]
        http = "/healthz"
        grace = "1m"
        [live]
        tcp = true
        interval = "2s"
        [load]
        signal = "prometheus"
        metric = "queue_depth"
        target = 25
        [scale]
        min = 0
        max = 8
        idle = "2m"
        down_window = "1m 30s"
        [route]
        host = "guestbook.local"
    "#;

    #[test]
    fn a_full_recipe_parses_with_defaults_filled_in() {
        let r = Recipe::parse(FULL).unwrap();
        assert_eq!(r.name, "guestbook");
        assert_eq!(r.env["GREETING"], "hi");
        assert_eq!(
            r.stop,
            Stop {
                signal: "SIGTERM".into(),
                timeout: Duration::from_secs(5),
                drain: Duration::from_millis(500)
            }
        );
        assert_eq!(r.ready.http.as_deref(), Some("/healthz"));
        assert_eq!(r.ready.grace, Duration::from_secs(60));
        assert_eq!(r.ready.interval, Duration::from_secs(1), "default");
        assert!(r.live.as_ref().unwrap().tcp);
        assert_eq!(
            r.load,
            Load {
                signal: LoadSignal::Prometheus,
                metric: Some("queue_depth".into()),
                target: 25.0
            }
        );
        assert_eq!(
            (r.scale.min, r.scale.max, r.scale.idle, r.scale.down_window),
            (0, 8, Duration::from_secs(120), Duration::from_secs(90))
        );
        assert_eq!((r.scale.up_step, r.scale.down_step), (4, 1), "defaults");
        assert_eq!(
            r.route,
            Route {
                prefix: None,
                host: Some("guestbook.local".into())
            }
        );
    }

    #[test]
    fn a_minimal_recipe_gets_sensible_defaults() {
        let r = Recipe::parse("name = \"api\"\ncommand = \"./api\"").unwrap();
        assert_eq!(r.route.prefix.as_deref(), Some("/api"));
        assert!(r.ready.tcp);
        assert_eq!(r.load.signal, LoadSignal::Inflight);
        assert_eq!((r.scale.min, r.scale.max), (1, 4));
        assert_eq!(r.dir, ".");
    }

    #[test]
    fn bad_recipes_are_refused_naming_the_field() {
        let base = "name = \"api\"\ncommand = \"./api\"\n";
        for (extra, wants) in [
            ("colour = \"red\"", "unknown field `colour`"),
            (
                "[stop]\ntimeout = \"ten seconds\"",
                "bad duration \"ten seconds\"",
            ),
            (
                "[scale]\nmin = 5\nmax = 2",
                "scale.min: 5 is above scale.max (2)",
            ),
            ("[scale]\nmax = 0", "scale.max"),
            (
                "[ready]\nhttp = \"/h\"\ntcp = true",
                "ready: give exactly one of",
            ),
            ("[ready]\nhttp = \"h\"", "ready.http"),
            ("[load]\nsignal = \"prometheus\"", "load.metric: missing"),
            ("[load]\nsignal = \"cpu\"", "unknown variant `cpu`"),
            ("[load]\ntarget = 0", "load.target"),
            ("[stop]\nsignal = \"SIGFOO\"", "stop.signal"),
            ("[route]\nprefix = \"api\"", "route.prefix"),
            (
                "[route]\nprefix = \"/a\"\nhost = \"b\"",
                "route: give prefix or host",
            ),
            ("[scale]\nspeed = 3", "unknown field `speed`"),
        ] {
            let err = Recipe::parse(&format!("{base}{extra}")).unwrap_err();
            assert!(err.contains(wants), "{extra:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
        assert!(
            Recipe::parse("name = \"api\"")
                .unwrap_err()
                .starts_with("command: missing")
        );
        assert!(
            Recipe::parse("name = \"Bad Name\"\ncommand = \"x\"")
                .unwrap_err()
                .starts_with("name:")
        );
        assert!(
            Recipe::parse("command = \"x\"")
                .unwrap_err()
                .contains("missing field `name`")
        );
    }
}
