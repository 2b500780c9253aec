"""Property-based fuzzing (hypothesis). Bounded in the suite; scale with HOOKLINE_FUZZ_EXAMPLES."""

from __future__ import annotations

import os

#: Examples per property; the suite's default is small, the documented larger run sets this.
EXAMPLES = int(os.environ.get("HOOKLINE_FUZZ_EXAMPLES", "0")) or None
