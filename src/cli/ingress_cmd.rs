//! `tunnel ingress validate` and `tunnel ingress rule URL`, with cloudflared's exact output.

use std::path::PathBuf;

use super::Outcome;
use super::settings::Settings;
use crate::config::file::{ConfigFile, parse_config, unknown_keys_warning};
use crate::ingress::gourl::GoUrl;
use crate::ingress::{Ingress, IngressTable, Matched};

const NO_CONFIG: &str = "No configuration file was found. Please create one, or use the --config flag to specify its filepath. You can use the help command to learn more about configuration files";

/// `validate`: `Validating rules from FILE` then `OK`, or the unused-keys warning.
pub fn validate(settings: &Settings, file: Option<&ConfigFile>) -> Outcome {
    let mut out = String::new();
    let (conf, from_json);
    if let Some(json) = settings.opt_string("json") {
        out.push_str("Validating rules from cmdline flag --json\n");
        // YAML is a superset of JSON, so the same parser (and error texts) apply.
        match parse_config(&json, &PathBuf::from("--json")) {
            Ok(c) => conf = c,
            Err(e) => return Outcome::failure(out, e.to_string()),
        }
        from_json = true;
    } else {
        let Some(file) = file else {
            return Outcome::failure(out, NO_CONFIG.into());
        };
        out.push_str(&format!(
            "Validating rules from {}\n",
            file.source.display()
        ));
        conf = file.clone();
        from_json = false;
    }
    if let Err(e) = Ingress::from_config(&conf.raw) {
        return Outcome::failure(out, format!("Validation failed: {e}"));
    }
    if settings.is_set("url") {
        return Outcome::failure(
            out,
            "You can't set the --url flag (or $TUNNEL_URL) when using multiple-origin ingress rules".into(),
        );
    }
    let warning = if from_json {
        None
    } else {
        unknown_keys_warning(&conf.raw.unknown_keys())
    };
    match warning {
        Some(w) => out.push_str(&format!(
            "Warning: unused keys detected in your config file. Here is a list of unused keys:\n{w}\n"
        )),
        None => out.push_str("OK\n"),
    }
    Outcome::success(out)
}

/// `rule URL`: which rule a URL matches, 0-based, with the rule's details.
pub fn rule(args: &[String], file: Option<&ConfigFile>) -> Outcome {
    let Some(arg) = args.first().filter(|a| !a.is_empty()) else {
        return Outcome::failure(
            String::new(),
            "cloudflared tunnel rule expects a single argument, the URL to test".into(),
        );
    };
    let url = match GoUrl::parse(arg) {
        Ok(u) => u,
        Err(_) => return Outcome::failure(String::new(), format!("{arg} is not a valid URL")),
    };
    if url.hostname().is_empty() && url.scheme.is_empty() {
        return Outcome::failure(
            String::new(),
            format!("{arg} doesn't have a hostname, consider adding a scheme"),
        );
    }
    let source = file
        .map(|f| f.source.display().to_string())
        .unwrap_or_default();
    let mut out = format!("Using rules from {source}\n");
    let empty = ConfigFile::default();
    let ingress = match Ingress::from_config(&file.unwrap_or(&empty).raw) {
        Ok(i) => i,
        Err(e) => return Outcome::failure(out, format!("Validation failed: {e}")),
    };
    let table = IngressTable::new(ingress);
    let Matched::Rule(index) = table.find(url.hostname(), &url.path) else {
        unreachable!("a table without internal hosts only returns user rules");
    };
    out.push_str(&format!("Matched rule #{}\n", index.0));
    out.push_str(&table.rule(index).multi_line_string());
    out.push('\n');
    Outcome::success(out)
}
