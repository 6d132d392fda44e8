"""The conformance steps (tests/sdk/cases.py) through both official SDKs against a real
lagoon-server: a representative set in the default suite, every step in the slow suite."""

from __future__ import annotations

import shutil

import pytest

from tests.sdk.cases import all_steps, representative_steps
from tests.sdk.conformance import Report, install_ts, run

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def typescript_sdk() -> None:
    """The TypeScript SDK, installed by npm from the pinned lock file."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the TypeScript SDK tests (apt-get install nodejs npm)")
    install_ts()


def assert_all_pass(report: Report) -> None:
    """Every step passes, except known gaps, which must still fail (remove the mark when fixed)."""
    failures = [f"[{o.sdk}] {o.step.key}: {o.detail}" for o in report.failures() if not o.step.gap]
    fixed = [f"[{o.sdk}] {o.step.key}" for o in report.outcomes if o.ok and o.step.gap]
    assert not failures, "\n" + report.table() + "\n" + "\n".join(failures)
    assert not fixed, f"known gaps now pass, remove their gap mark: {fixed}"


def test_representative_steps_both_sdks(server_url: str, typescript_sdk: None) -> None:
    steps = representative_steps()
    assert len(steps) >= 15
    report = run(steps, server_url, ("py", "ts"))
    assert report.counts("py")[1] == len(steps)
    assert_all_pass(report)


@pytest.mark.slow
def test_every_step_both_sdks(server_url: str, typescript_sdk: None) -> None:
    report = run(all_steps(), server_url, ("py", "ts"))
    assert_all_pass(report)
