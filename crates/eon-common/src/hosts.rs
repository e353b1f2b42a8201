//! Hosts: the machines a cluster's front ends run on, and how to power
//! them off and on.
//!
//! `eon up --hosts FILE` reads a TOML list of hosts. The cluster's own
//! machine is the host named `local` (its entry, if any, sets its slots);
//! every other host runs `eon agent --join ADDR --name NAME`. A host with
//! power commands can be parked: when it has had no instance for
//! `park_after`, the balancer runs `power_off`; when instances need a place
//! and no awake host has a free slot, it runs `power_on` and places them
//! there once the host's agent has joined. Locally, "powering on" a host
//! can simply start an `eon agent` process and "powering off" stop it,
//! which is how the tests do it.
//!
//! ```toml
//! [[host]]
//! name = "local"
//! slots = 2                        # front-end instances it takes
//!
//! [[host]]
//! name = "b"
//! slots = 4
//! power_on = "ssh b sudo systemctl start eon-agent"   # run by sh -c
//! power_off = "ssh b sudo poweroff"
//! park_after = "5m"                # empty this long: park it
//! ```

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsFile {
    #[serde(default)]
    pub host: Vec<HostSpec>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    pub name: String,
    #[serde(default = "HostSpec::default_slots")]
    pub slots: u32,
    #[serde(default)]
    pub power_on: Option<String>,
    #[serde(default)]
    pub power_off: Option<String>,
    #[serde(
        default = "HostSpec::default_park_after",
        deserialize_with = "crate::recipe::duration"
    )]
    pub park_after: Duration,
}

impl HostSpec {
    fn default_slots() -> u32 {
        8
    }
    fn default_park_after() -> Duration {
        Duration::from_secs(300)
    }
    /// A host that joins without being declared.
    pub fn joined(name: &str) -> HostSpec {
        HostSpec {
            name: name.into(),
            slots: HostSpec::default_slots(),
            power_on: None,
            power_off: None,
            park_after: HostSpec::default_park_after(),
        }
    }
}

impl HostsFile {
    /// Parse and check; the error is one line naming the field.
    pub fn parse(text: &str) -> Result<HostsFile, String> {
        let f: HostsFile = toml::from_str(text).map_err(|e| e.message().trim().to_string())?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, h) in f.host.iter().enumerate() {
            if h.name.is_empty()
                || !h
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return Err(format!("host[{i}].name: {:?} is not a host name", h.name));
            }
            if !seen.insert(h.name.clone()) {
                return Err(format!("host[{i}].name: {:?} is declared twice", h.name));
            }
            if h.power_on.is_some() != h.power_off.is_some() {
                return Err(format!(
                    "host[{i}] ({}): power_on and power_off go together",
                    h.name
                ));
            }
            if h.name == "local" && h.power_off.is_some() {
                return Err("host \"local\": the cluster's own host cannot be parked".into());
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked() {
        let f = HostsFile::parse("[[host]]\nname = \"local\"\nslots = 1\n[[host]]\nname = \"b\"\npower_on = \"x\"\npower_off = \"y\"\npark_after = \"2s\"\n").unwrap();
        assert_eq!(f.host[1].park_after, Duration::from_secs(2));
        assert_eq!(f.host[0].slots, 1);
        for (text, field) in [
            (
                "[[host]]\nname = \"b\"\npower_on = \"x\"\n",
                "power_on and power_off",
            ),
            (
                "[[host]]\nname = \"b\"\n[[host]]\nname = \"b\"\n",
                "declared twice",
            ),
            ("[[host]]\nname = \"b\"\nslot = 2\n", "unknown field `slot`"),
            (
                "[[host]]\nname = \"b\"\npark_after = \"soon\"\n",
                "bad duration",
            ),
        ] {
            let e = HostsFile::parse(text).unwrap_err();
            assert!(e.contains(field), "{text}: {e}");
        }
    }
}
