"""``lagoon doctor`` against moto's S3 server, whose conditional PUT checks and then writes
without a lock: the doctor must not vouch for it. A race either finds a double winner (fail) or
says plainly that its evidence is inconclusive; the report never ends "OK: the store provides
every guarantee". (bench/doctor_moto.py measures the rate over many runs.)"""

from __future__ import annotations

import pytest

from bench.doctor_moto import moto_server
from lagoon.config import StorageSettings
from lagoon.engine.ops.doctor import DoctorOptions, run_doctor
from lagoon.storage.factory import open_store


@pytest.mark.slow
def test_doctor_does_not_vouch_for_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    with moto_server() as endpoint:
        for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}.items():
            monkeypatch.setenv(name, value)
        settings = StorageSettings(backend="s3", bucket="doctor", region="us-east-1", endpoint=endpoint)
        report = run_doctor(open_store(settings), DoctorOptions(rounds=100, threads=4, peer=settings))
    text = report.render()
    for name in ("create-race", "if-match-race"):
        check = report.get(name) or pytest.fail(text)
        assert check.status == "fail" or "inconclusive" in check.detail, text
        assert "contended rounds" in check.detail or check.status == "fail", text
    assert "OK: the store provides every guarantee" not in text
