"""padlock's error reasons, read from the contract itself
(proto/padlock/errors/v1/errors.proto), so a test names a reason the
services really give: `Reason.MFA_REQUIRED == "MFA_REQUIRED"`, and a
misspelt one fails with AttributeError instead of never matching."""

import re
from pathlib import Path

_PROTO = Path(__file__).resolve().parents[2] / "proto/padlock/errors/v1/errors.proto"


class _Reasons:
    def __init__(self, names: list[str]):
        if len(names) < 10:
            raise RuntimeError(f"too few reasons parsed from {_PROTO}")
        self.__dict__.update({name: name for name in names})

    def __getattr__(self, name: str) -> str:
        raise AttributeError(f"{name} is not a reason in {_PROTO.name}")


Reason = _Reasons(
    [
        name
        for name in re.findall(r"^\s+([A-Z][A-Z0-9_]*)\s*=\s*\d+;", _PROTO.read_text(), re.M)
        if name != "ERROR_REASON_UNSPECIFIED"
    ]
)
