"""Entry point of ``lagoon doctor``'s second racing process: ``python -m lagoon.engine.ops.doctor_peer``.

Started and driven over stdin/stdout by ``lagoon.engine.ops.doctor.PeerProcess``; not for people.
"""

from __future__ import annotations

from lagoon.engine.ops.doctor import peer_main

if __name__ == "__main__":
    raise SystemExit(peer_main())
