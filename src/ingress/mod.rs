//! Ingress: which local service answers a request, with cloudflared's exact semantics.
//!
//! Pure: parsing and validating rules ([`rules`]), the kinds of service ([`service`]),
//! per-rule origin options ([`origin_request`]), and the compiled lookup table the data-plane
//! cores read lock-free ([`table`]). Go's URL and regex dialects live in [`gourl`] and
//! [`goregex`]. Nothing here opens a socket or reads a file.

pub mod goregex;
pub mod gourl;
pub mod origin_request;
pub mod rules;
pub mod service;
pub mod table;

pub use origin_request::{Access, IpRule, OriginRequest};
pub use rules::{Ingress, IngressError, Rule, RuleIndex, WarpRouting};
pub use service::{HttpOrigin, Service, StreamOrigin};
pub use table::{IngressTable, Matched, SharedIngress};
