//! The network part of `tunnel diag`, as cloudflared's Unix collector: `traceroute -I -w 5 -m 5`
//! (and `traceroute6`) to region1 and region2 of the edge, four at once, each output kept raw
//! (`raw-network.txt`) and decoded into hops (`network.json`). Offline, name resolution fails
//! and each trace fails at once, as cloudflared's do.

use std::collections::BTreeMap;

/// One hop: its number, the name/address (`*` on timeout) and round trips in Go's
/// `time.Duration` units as cloudflared records them (milliseconds x 1000).
#[derive(Debug, PartialEq, serde::Serialize)]
pub struct Hop {
    #[serde(skip_serializing_if = "is_zero")]
    hop: u8,
    #[serde(skip_serializing_if = "String::is_empty")]
    domain: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rtts: Vec<i64>,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

/// A trace's name (`host-v4`) and its hops and raw output, or why it failed.
pub type Trace = (String, Result<(Vec<Hop>, String), String>);

/// Decodes one traceroute line; `None` for lines that are not hops (the header).
pub fn decode_line(text: &str) -> Option<Hop> {
    let parts: Vec<&str> = text
        .split_whitespace()
        .filter(|f| *f != "*" && *f != "ms")
        .collect();
    let hop: u8 = parts.first()?.parse().ok()?;
    if parts.len() == 1 {
        return Some(Hop {
            hop,
            domain: "*".into(),
            rtts: Vec::new(),
        });
    }
    let mut domain = Vec::new();
    let mut rtts = Vec::new();
    for p in &parts[1..] {
        match p.parse::<f64>() {
            Ok(ms) => rtts.push((ms * 1000.0) as i64),
            Err(_) => domain.push(*p),
        }
    }
    (!domain.is_empty()).then(|| Hop {
        hop,
        domain: domain.join(" "),
        rtts,
    })
}

fn trace(host: &str, v4: bool) -> Trace {
    let name = format!("{host}-{}", if v4 { "v4" } else { "v6" });
    let cmd = if v4 { "traceroute" } else { "traceroute6" };
    let out = std::process::Command::new(cmd)
        .args(["-I", "-w", "5", "-m", "5", host])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    let result = match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "error starting traceroute: exec: \"{cmd}\": executable file not found in $PATH"
        )),
        Err(e) => Err(format!("error starting traceroute: exec: \"{cmd}\": {e}")),
        Ok(o) if !o.status.success() => Err(format!("error finishing traceroute: {}", o.status)),
        Ok(o) => {
            let raw = String::from_utf8_lossy(&o.stdout).into_owned();
            Ok((raw.lines().filter_map(decode_line).collect(), raw))
        }
    };
    (name, result)
}

/// The four traces, run at once.
pub fn traceroutes() -> Vec<Trace> {
    let pairs = [
        ("region1.v2.argotunnel.com", true),
        ("region1.v2.argotunnel.com", false),
        ("region2.v2.argotunnel.com", true),
        ("region2.v2.argotunnel.com", false),
    ];
    let handles: Vec<_> = pairs
        .into_iter()
        .map(|(h, v4)| std::thread::spawn(move || trace(h, v4)))
        .collect();
    handles
        .into_iter()
        .zip(pairs)
        .map(|(t, (h, v4))| {
            t.join()
                .unwrap_or_else(|_| (format!("{h}-{v4}"), Err("trace panicked".into())))
        })
        .collect()
}

fn first_error(traces: &[Trace]) -> Option<String> {
    traces.iter().find_map(|(_, r)| r.as_ref().err().cloned())
}

/// `raw-network.txt`: each trace's name and output (`no content` when it failed); the first
/// failure fails the job, as in cloudflared.
pub fn raw_text(traces: &[Trace]) -> Result<Vec<u8>, String> {
    let mut out = String::new();
    for (name, r) in traces {
        match r {
            Ok((_, raw)) => out.push_str(&format!("{name}\n{raw}\n")),
            Err(_) => out.push_str(&format!("{name}\nno content\n")),
        }
    }
    first_error(traces).map_or(Ok(out.into_bytes()), Err)
}

/// `network.json`: trace name to hops (`null` when it failed).
pub fn json_text(traces: &[Trace]) -> Result<Vec<u8>, String> {
    let map: BTreeMap<&str, Option<&Vec<Hop>>> = traces
        .iter()
        .map(|(n, r)| (n.as_str(), r.as_ref().ok().map(|(h, _)| h)))
        .collect();
    let text = serde_json::to_string_pretty(&map).map_err(|e| e.to_string())?;
    first_error(traces).map_or(Ok(format!("{text}\n").into_bytes()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_hops_as_cloudflared() {
        assert_eq!(decode_line("traceroute to x (1.2.3.4), 5 hops max"), None);
        assert_eq!(
            decode_line(" 2  * * *"),
            Some(Hop {
                hop: 2,
                domain: "*".into(),
                rtts: vec![]
            })
        );
        assert_eq!(
            decode_line(" 1  gw (10.0.0.1)  0.512 ms  0.4 ms"),
            Some(Hop {
                hop: 1,
                domain: "gw (10.0.0.1)".into(),
                rtts: vec![512, 400]
            })
        );
    }
}
