"""`gateway serve` raises its open-file limit to the hard limit: one held client is one
socket, and the usual soft limit of 1024 would cap a worker at about a thousand."""

from __future__ import annotations

import resource
import subprocess
import sys

PROGRAM = """
import resource
from gateway.ops.serving import raise_open_file_limit
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
print(*raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    # In a child process: the test runner's own limits are left as they were.
    out = subprocess.run(
        [sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True
    ).stdout
    soft, hard, now = (int(word) for word in out.split())
    _, our_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = our_hard if our_hard != resource.RLIM_INFINITY else 1_048_576
    assert soft == now == expected > 256
    assert hard == our_hard
