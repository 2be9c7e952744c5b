"""Fixtures: each test gets its own origin and its own Holdfast routing to it."""

import os
from pathlib import Path

import pytest
from gripcontrol import GripPubControl

from harness import Holdfast, Origin

REPO = Path(__file__).resolve().parents[3]
DEFAULT_BIN = REPO / "target" / "debug" / "holdfast"


@pytest.fixture
def holdfast_bin():
    binary = Path(os.environ.get("HOLDFAST_BIN") or DEFAULT_BIN)
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"holdfast binary not found at {binary}: build it (cargo build -p holdfast) "
            "or set HOLDFAST_BIN"
        )
    return binary


@pytest.fixture
def origin():
    o = Origin()
    yield o
    o.stop()


@pytest.fixture
def holdfast(holdfast_bin, origin, tmp_path):
    hf = Holdfast(holdfast_bin, tmp_path, origin.port)
    yield hf
    hf.stop()
    # Shown by pytest only when the test failed.
    print(f"--- holdfast log ({hf.log_path}) ---\n{hf.log()}")


@pytest.fixture
def start_holdfast(holdfast_bin, tmp_path):
    """Starts a Holdfast with a given configuration (TOML text), more command-line `args` and an
    origin port; `auth` is the Authorization value for its /metrics when publish auth is on. Every
    one started is stopped when the test ends."""
    started = []

    def start(origin_port, config=None, args=(), auth=None):
        workdir = tmp_path / f"holdfast-{len(started)}"
        workdir.mkdir()
        hf = Holdfast(holdfast_bin, workdir, origin_port, config=config, args=args, auth=auth)
        started.append(hf)
        return hf

    yield start
    for hf in started:
        hf.stop()
        print(f"--- holdfast log ({hf.log_path}) ---\n{hf.log()}")


@pytest.fixture
def publisher(holdfast):
    pub = GripPubControl({"control_uri": holdfast.control_uri})
    yield pub
    pub.close()
