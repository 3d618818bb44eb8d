from __future__ import annotations

import pytest

from xraycnn.tracking.store import redact


@pytest.mark.parametrize(
    ("uri", "printed"),
    [
        ("postgresql://xr:s3cret@db:5432/mlflow", "postgresql://xr:***@db:5432/mlflow"),
        (
            "postgresql://db/mlflow?user=xr&password=s3cret&sslmode=require",
            "postgresql://db/mlflow?user=xr&password=***&sslmode=require",
        ),
        ("mysql://xr:p%40ss@db/m?sslpassword=x&ssl", "mysql://xr:***@db/m?sslpassword=***&ssl"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("sqlite:////home/u/mlruns/mlflow.db", "sqlite:////home/u/mlruns/mlflow.db"),
    ],
)
def test_passwords_never_reach_the_console(uri: str, printed: str) -> None:
    assert redact(uri) == printed
    assert "s3cret" not in redact(uri)
