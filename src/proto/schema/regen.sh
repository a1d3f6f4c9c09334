#!/usr/bin/env sh
# Regenerate the committed Rust bindings in src/proto/generated/ from the
# schemas in this folder. A normal build never runs this: the output is
# committed so that building ringflare needs no Cap'n Proto compiler.
#
# Needs: the `capnp` compiler (Debian: apt-get install capnproto) and the
# `capnpc-rust` plugin at the same version as the `capnp` crate in
# Cargo.toml (cargo install capnpc --version 0.27.0).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../generated"
mkdir -p "$out"
cd "$here"
capnp compile --no-standard-import -orust:"$out" tunnelrpc.capnp quic_metadata_protocol.capnp
# capnpc-rust assumes the modules live at the crate root; ours live under
# crate::proto::generated, so rewrite the absolute paths it emits.
for f in "$out"/tunnelrpc_capnp.rs "$out"/quic_metadata_protocol_capnp.rs; do
  sed -i \
    -e 's/crate::tunnelrpc_capnp/crate::proto::generated::tunnelrpc_capnp/g' \
    -e 's/crate::quic_metadata_protocol_capnp/crate::proto::generated::quic_metadata_protocol_capnp/g' \
    "$f"
done
echo "regenerated bindings in $out"
