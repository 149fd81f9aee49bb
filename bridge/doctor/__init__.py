"""``python -m bridge doctor``: checks a deployment from the bridge's side, one line per check
with the fix, because what goes wrong in a MatrixRTC set-up (discovery, OpenID reachability,
reverse proxies, ports, TURN, clocks) shows only as a call that does not connect."""
